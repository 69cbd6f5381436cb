//! Issue 17, finding 2: when the OS will not start another thread, the
//! connection that needed it is refused with a 503, and the listener lives.
//!
//! The real binary runs under a real thread limit (`RLIMIT_NPROC`, set with
//! `prlimit`). The kernel does not apply that limit to root, so as root the
//! server runs as `nobody` (`setpriv`), from a copy of the binary that
//! `nobody` may execute.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const THREAD_LIMIT: u32 = 40;

struct Limited {
    child: Child,
    http: String,
    ws: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_under_thread_limit() -> Limited {
    let dir = std::env::temp_dir().join(format!("switchboard-nproc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = dir.join("switchboard");
    std::fs::copy(env!("CARGO_BIN_EXE_switchboard"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let limit = format!("--nproc={THREAD_LIMIT}");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg("prlimit");
        c
    } else {
        Command::new("prlimit")
    };
    let mut child = command
        .arg(&limit)
        .arg("--")
        .arg(&binary)
        .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv/prlimit and the binary start");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = |kind: &str| {
        let line = lines.next().expect("a listening line").expect("utf-8");
        line.strip_prefix(&format!("listening {kind} "))
            .unwrap_or_else(|| panic!("expected 'listening {kind} ADDR', got {line:?}"))
            .to_owned()
    };
    let http = next("http");
    let ws = next("ws");
    Limited {
        child,
        http,
        ws,
        _dir: TempDir(dir),
    }
}

/// Sends one request on `stream` and returns the status of its answer.
fn ask(stream: &mut TcpStream, request: &str) -> Option<u16> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn issue_17_a_thread_that_cannot_start_is_a_503_and_http_lives_on() {
    let mut server = start_under_thread_limit();
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Keep-alive connections, each holding a thread, until threads run out.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..2 * THREAD_LIMIT {
        let mut stream = TcpStream::connect(&server.http).expect("connect");
        match ask(&mut stream, healthz) {
            Some(200) => held.push(stream),
            Some(503) => refused += 1,
            other => panic!("expected 200 or 503, got {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "no connection was refused: is the thread limit applied?"
    );
    // A WebSocket handshake now is refused the same way, not dropped.
    let mut ws = TcpStream::connect(&server.ws).expect("connect ws");
    let handshake = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(ask(&mut ws, handshake), Some(503));
    drop(ws);
    // Once the connections close, their threads end and HTTP serves again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(&server.http).expect("connect");
        if ask(&mut stream, healthz) == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let status = server.child.wait().expect("wait");
    let mut stderr = String::new();
    let _ = server
        .child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(
        !stderr.contains("panicked"),
        "the server panicked:\n{stderr}"
    );
    assert!(status.success(), "exit {status:?}:\n{stderr}");
}
