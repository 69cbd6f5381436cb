//! Lesson 2: a chat client in a dozen lines of blocking code (tungstenite).
//!
//! Connects, says one line in `#lobby` (plain text), asks who is there (a
//! JSON command), and prints every event until the presence list arrives:
//! the welcome, its own join notice, its message coming back, the presence
//! list. The hub answers in the order it was asked, so the list comes last.
//! Then it closes and reads until the server's close frame comes back (the
//! WebSocket closing handshake). With no server given, it starts one in this
//! process on 127.0.0.1 (a free port) and shuts it down at the end.
//!
//!     cargo run --example 02_chat_client -- "hello"
//!
//! Against a running server, with websocat watching from another terminal:
//!
//!     cargo run --release                                  # terminal 1
//!     websocat 'ws://127.0.0.1:8081/ws?name=bob'           # terminal 2
//!     SWITCHBOARD_URL='ws://127.0.0.1:8081/ws?name=lesson2' \
//!         cargo run --example 02_chat_client -- "hello"    # terminal 3
//!
//! In switchboard: the other end of this conversation is `src/transport/ws/`
//! (a reader and a writer thread per connection); `Server::start` is in
//! `src/server.rs`, and every integration test starts the server the same way.

use std::time::Duration;

use switchboard::{Config, Server};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hello from lesson 2".into());
    let (url, server) = match std::env::var("SWITCHBOARD_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = Server::start(Config::for_tests())?;
            let url = format!("ws://{}/ws?name=lesson2", server.ws_addr);
            (url, Some(server))
        }
    };
    println!("connecting to {url}");
    let (mut socket, _response) = tungstenite::connect(&url)?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        // A server that goes quiet ends the lesson with an error, not a hang.
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    socket.send(Message::text(text))?; // a plain line: a message to the room joined last
    socket.send(Message::text(r#"{"type":"who"}"#))?; // a JSON command
    loop {
        match socket.read()? {
            Message::Text(event) => {
                println!("{event}");
                let event: serde_json::Value =
                    serde_json::from_str(event.as_str()).unwrap_or_default();
                if event["type"] == "presence" {
                    break;
                }
            }
            Message::Close(frame) => {
                println!("closed by the server: {frame:?}");
                return Ok(());
            }
            _ => {} // pings are answered by tungstenite as it reads
        }
    }
    socket.close(None)?;
    loop {
        match socket.read() {
            Ok(Message::Close(_)) => println!("the server answered our close frame"),
            Ok(_) => {} // events already on their way when we said goodbye
            Err(tungstenite::Error::ConnectionClosed) => break, // the handshake is done
            Err(e) => return Err(e.into()),
        }
    }
    // The handshake is done; closing the TCP socket is still ours to do (the
    // server waits for our FIN a moment before it cuts the connection).
    drop(socket);
    if let Some(server) = server {
        println!(
            "in-process server shut down in {:?}",
            server.shutdown().took
        );
    }
    Ok(())
}
