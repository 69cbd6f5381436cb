//! Lesson 2: a chat client in a dozen lines of blocking code (tungstenite).
//!
//! Connects to a running switchboard, says one thing in `#lobby`, asks who is
//! there, and prints every event for five seconds: the welcome, its own join
//! notice, its message coming back, the presence list.
//!
//!     cargo run --release                                  # in one terminal
//!     cargo run --example 02_chat_client -- "hello"        # in another
//!     websocat 'ws://127.0.0.1:8081/ws?name=bob'           # watch it from a third
//!
//! The URL comes from `SWITCHBOARD_URL` (default `ws://127.0.0.1:8081/ws?name=lesson2`).

use std::time::{Duration, Instant};

use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SWITCHBOARD_URL")
        .unwrap_or_else(|_| "ws://127.0.0.1:8081/ws?name=lesson2".into());
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "hello from lesson 2".into());
    let (mut socket, _response) = tungstenite::connect(&url)?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        // Wake up now and then, so the five seconds below end on time.
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    }
    socket.send(Message::text(text))?; // a plain line: a message to the room joined last
    socket.send(Message::text(r#"{"type":"who"}"#))?; // a JSON command
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match socket.read() {
            Ok(Message::Text(event)) => println!("{event}"),
            Ok(Message::Close(frame)) => {
                println!("closed: {frame:?}");
                break;
            }
            Ok(_) => {} // pings are answered by tungstenite as it reads
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    socket.close(None)?;
    Ok(())
}
