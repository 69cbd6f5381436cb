//! Interop: Python's grpcio, with stubs generated from `proto/switchboard.proto`
//! at run time, drives every RPC against a real server
//! (`tests/interop/grpc_interop.py`), while a WebSocket member of the same
//! room checks that what Python sent crossed over to the other transport.
//!
//! Needs a Python with `grpcio grpcio-tools`: `SWITCHBOARD_PYTHON`, else
//! `python3` (scripts/test.sh makes a virtual environment of its own and
//! points `SWITCHBOARD_PYTHON` at it). Without them the test says so and
//! passes, unless `CI` or `SWITCHBOARD_REQUIRE_INTEROP` is set, where a
//! missing client is a failure.

#![cfg(feature = "grpc")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{secs, TestServer};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/grpc_interop.py");

/// The Python to run: `SWITCHBOARD_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_has_grpc() -> bool {
    Command::new(python())
        .args(["-c", "import grpc, grpc_tools"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn python_grpcio_client_drives_every_rpc_and_reaches_websocket_members() {
    if !python_has_grpc() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("SWITCHBOARD_REQUIRE_INTEROP").is_some();
        assert!(
            !required,
            "python3 with grpcio and grpcio-tools is required here: \
             python3 -m pip install grpcio grpcio-tools"
        );
        eprintln!("skipped: python3 -m pip install grpcio grpcio-tools to run the interop test");
        return;
    }
    let server = TestServer::start_with(|config| {
        config.grpc_addr = Some("127.0.0.1:0".parse().expect("an address"));
    });
    let mut member = server.client("room=interop&name=ws-member");
    let addr = server.server().grpc_addr.expect("the gRPC front is on");

    let mut python = Command::new(python())
        .arg(SCRIPT)
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + secs(90);
    let status = loop {
        if let Some(status) = python.try_wait().expect("wait for python3") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = python.kill(); // our own child
            panic!("the interop script did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50)); // polling the child with a deadline
    };
    let mut transcript = String::new();
    let mut errors = String::new();
    let _ = python
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut transcript);
    let _ = python
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut errors);
    println!("{transcript}");
    assert!(
        status.success(),
        "the interop script failed ({status}):\n{transcript}\n{errors}"
    );
    assert!(
        transcript.contains("interop: all checks passed"),
        "{transcript}"
    );

    // What Python published and said reached the WebSocket member, in order.
    for n in 1..=3 {
        let event = member.wait_for(|e| e["type"] == "message", secs(5));
        assert_eq!(event["text"], format!("py message {n}"));
        assert_eq!(
            (&event["from"], &event["from_id"]),
            (&"py-pub".into(), &"grpc".into())
        );
    }
    let chat = member.wait_for(|e| e["type"] == "message", secs(5));
    assert_eq!(
        (&chat["from"], &chat["text"]),
        (&"py-chat".into(), &"hello from python".into())
    );
    member.wait_for(|e| e["type"] == "left" && e["name"] == "py-sub", secs(5));
}
