//! Lesson 3: Server-Sent Events by hand, over a plain `TcpStream`.
//!
//! SSE is an HTTP response whose body does not end: the server writes one
//! block per event, `field: value` lines closed by a blank line, and flushes
//! each as it happens. This lesson writes the `GET /events` request itself,
//! reads the response head, then parses blocks (`id:`, `event:`, `data:`; a
//! line starting with `:` is a comment, the heartbeat). Once subscribed, it
//! publishes with a raw `POST /rooms/lessons/messages` on a second connection
//! and watches its message arrive on the stream. It asks in HTTP/1.0, so the
//! body is the bare stream; over HTTP/1.1 the server frames it in chunks
//! (`Transfer-Encoding: chunked`), which curl and browsers undo for you.
//! With no server given, it starts one in this process on 127.0.0.1.
//!
//!     cargo run --example 03_sse_by_hand
//!     SWITCHBOARD_HTTP=127.0.0.1:8080 cargo run --example 03_sse_by_hand   # a running server
//!     curl -N 'localhost:8080/events?room=lessons&name=carol'   # the same stream, in a terminal
//!
//! In switchboard: `src/transport/sse.rs` writes these blocks (`Wire`,
//! `Chunk`); `src/http/rest.rs` answers the POST.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use switchboard::{Config, Server};

const ROOM: &str = "lessons";
const TEXT: &str = "hello from lesson 3";
/// A server that goes quiet ends the lesson with an error, not a hang.
const PATIENCE: Duration = Duration::from_secs(5);

/// One block of the stream. `event` defaults to "message", as in browsers.
#[derive(Default)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (addr, server) = match std::env::var("SWITCHBOARD_HTTP") {
        Ok(addr) => (addr, None),
        Err(_) => {
            let server = Server::start(Config::for_tests())?;
            (server.http_addr.to_string(), Some(server))
        }
    };
    let stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let request = format!(
        "GET /events?room={ROOM}&name=lesson3 HTTP/1.0\r\n\
         Host: {addr}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    (&stream).write_all(request.as_bytes())?;
    let mut stream = BufReader::new(stream);

    // The head: a status line, headers, a blank line. Then the body begins.
    let head = read_head(&mut stream)?;
    println!("{}", head.join("\n"));
    if !head[0].contains(" 200 ") {
        return Err(format!("GET /events answered {:?}", head[0]).into());
    }

    // Once the welcome has come, we are a member: what is published now reaches us.
    while next_event(&mut stream)?.event != "welcome" {}
    println!("subscribed; publishing with a POST on a second connection");
    println!("  the POST answered: {}", publish(&addr)?);
    loop {
        let event = next_event(&mut stream)?;
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
        if event.event == "message" && data["text"] == TEXT {
            break;
        }
    }
    println!("our message came back on the stream");
    drop(stream); // the server notices at its next write, and ends the stream
    if let Some(server) = server {
        println!(
            "in-process server shut down in {:?}",
            server.shutdown().took
        );
    }
    Ok(())
}

/// Lines up to the blank one that ends an HTTP response head.
fn read_head(stream: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut head = Vec::new();
    loop {
        let line = read_line(stream)?;
        if line.is_empty() {
            return Ok(head);
        }
        head.push(line);
    }
}

/// Reads lines until a blank one ends a block with fields in it, and prints
/// what came. Comments (`: ping`) are skipped; several `data:` lines join
/// with newlines; `retry:` tells a browser how long to wait to reconnect.
fn next_event(stream: &mut impl BufRead) -> io::Result<SseEvent> {
    let mut event = SseEvent::default();
    let mut fields = 0;
    loop {
        let line = read_line(stream)?;
        if line.is_empty() {
            if fields > 0 {
                if event.event.is_empty() {
                    event.event = "message".into();
                }
                let id = event.id.as_deref().unwrap_or("-");
                println!("event: {:<8} id: {id:<3} data: {}", event.event, event.data);
                return Ok(event);
            }
            continue; // a blank line after a comment or `retry:` alone
        }
        // "field: value", one optional space after the colon.
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => println!("(comment: {value})"),
            "id" => event.id = Some(value.to_owned()),
            "event" => event.event = value.to_owned(),
            "data" if event.data.is_empty() => event.data = value.to_owned(),
            "data" => event.data = format!("{}\n{value}", event.data),
            "retry" => println!("(retry after {value} ms)"),
            _ => {} // unknown fields are ignored, as the SSE standard says
        }
        fields += usize::from(matches!(field, "id" | "event" | "data"));
    }
}

/// One line without its `\r\n` (or `\n`); the end of the stream is an error here.
fn read_line(stream: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `POST /rooms/lessons/messages` with a text/plain body, written by hand;
/// returns the status line and body (`202 Accepted`, `{"id":N}`).
fn publish(addr: &str) -> io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(PATIENCE))?;
    let key = std::env::var("SWITCHBOARD_API_KEY").unwrap_or_default();
    let auth = match key.as_str() {
        "" => String::new(),
        key => format!("Authorization: Bearer {key}\r\n"),
    };
    let request = format!(
        "POST /rooms/{ROOM}/messages?from=lesson3 HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\
         {auth}Connection: close\r\n\r\n{TEXT}",
        TEXT.len()
    );
    conn.write_all(request.as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?; // `Connection: close`: read to the end
    let status = response.lines().next().unwrap_or_default();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(format!("{status} {body}"))
}
