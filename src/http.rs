//! The HTTP listener on `--http` (tiny_http): health now; the chat page, SSE,
//! REST and metrics build on it.
//!
//! tiny_http reads requests on its own threads and hands them to `recv()`;
//! this loop answers quick requests inline.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use log::debug;
use tiny_http::{Header, Request, Response, Server};

use crate::threads::{spawn_named, WRITER_STACK_BYTES};
use crate::transport::Shared;

/// Starts the HTTP loop on `server`; it ends when `server.unblock()` is called.
pub fn spawn_listener(server: Arc<Server>, shared: Shared) -> io::Result<JoinHandle<()>> {
    spawn_named("http".into(), WRITER_STACK_BYTES, move || {
        for request in server.incoming_requests() {
            if shared.shutting_down() {
                break;
            }
            route(request, &shared);
        }
        debug!("http loop ends");
    })
}

fn route(request: Request, _shared: &Shared) {
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let response = match path.as_str() {
        "/healthz" => text(200, "ok"),
        _ => text(404, &format!("nothing at {path}")),
    };
    let _ = request.respond(response); // the client may be gone
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
        .expect("a static header is valid");
    Response::from_string(format!("{body}\n"))
        .with_status_code(status)
        .with_header(header)
}
