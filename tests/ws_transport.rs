//! The WebSocket transport at the edges: bad frames, limits, handshakes that
//! are refused, `/echo`, pings and silent peers, shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{handshake_request, raw_http, secs, Client, Got, TestServer};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// The status line of the response to `request`.
fn status_line(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).trim_end().to_owned()
}

fn expect_close(client: &mut Client, code: u16) {
    match client.wait_for_close(secs(5)) {
        Got::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), code, "{frame:?}"),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start();
    let mut client = server.client("name=x");
    let bad = Frame::message(vec![0x68, 0xff, 0xfe, 0x69], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(bad)).expect("send raw frame");
    expect_close(&mut client, 1007);
}

#[test]
fn oversize_message_closes_with_1009_on_echo_too() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1000);
    let mut echo = Client::connect(&server.ws_url("/echo"));
    echo.ws
        .send(Message::binary(vec![7u8; 1001]))
        .expect("send");
    expect_close(&mut echo, 1009);
}

#[test]
fn bad_json_gets_an_error_and_the_connection_lives_on() {
    let server = TestServer::start();
    let mut client = server.client("name=x");
    client.send_text("{not json");
    let error = client.wait_for(|e| e["type"] == "error", secs(5));
    assert_eq!(error["code"], "bad_request");
    client.say("lobby", "still alive");
}

#[test]
fn echo_returns_text_and_binary_frames_unchanged() {
    let server = TestServer::start();
    let mut echo = Client::connect(&server.ws_url("/echo"));
    echo.send_text("héllo ✓");
    assert!(matches!(echo.next(secs(5)), Got::Text(t) if t == "héllo ✓"));
    let payload: Vec<u8> = (0..=255).collect();
    echo.ws
        .send(Message::binary(payload.clone()))
        .expect("send");
    assert!(matches!(echo.next(secs(5)), Got::Binary(b) if b == payload));
    let big = "z".repeat(60_000);
    echo.send_text(&big);
    assert!(matches!(echo.next(secs(5)), Got::Text(t) if t == big));
    echo.ws.close(None).expect("close");
    assert!(matches!(echo.wait_for_close(secs(5)), Got::Closed(_)));
}

#[test]
fn handshakes_are_refused_with_the_right_status() {
    let server = TestServer::start();
    let status = |request: String| status_line(server.ws, &request);
    assert!(status(handshake_request("/nowhere", "")).starts_with("HTTP/1.1 404"));
    let evil = "Origin: http://evil.example\r\n";
    assert!(status(handshake_request("/ws", evil)).starts_with("HTTP/1.1 403"));
    let the_page = format!("Origin: http://{}\r\n", server.http);
    assert!(status(handshake_request("/ws", &the_page)).starts_with("HTTP/1.1 101"));
    assert!(status(handshake_request("/ws?room=bad%20room", "")).starts_with("HTTP/1.1 400"));
    assert!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".into()).starts_with("HTTP/1.1 426"));
    assert!(status("garbage\r\n\r\n".into()).starts_with("HTTP/1.1 400"));
    // Past 64 rooms: refused, as SSE and gRPC refuse it, not cut to 64.
    let rooms: String = (0..65).map(|n| format!("room=r{n}&")).collect();
    assert!(status(handshake_request(&format!("/ws?{rooms}"), "")).starts_with("HTTP/1.1 400"));
    let rooms: String = (0..64).map(|n| format!("room=r{n}&")).collect();
    assert!(status(handshake_request(&format!("/ws?{rooms}"), "")).starts_with("HTTP/1.1 101"));
}

#[test]
fn connections_over_the_limit_get_503_until_one_leaves() {
    let server = TestServer::start_with(|c| c.max_connections = 2);
    let status = |request: String| status_line(server.ws, &request);
    let first = server.client("name=one");
    let _second = server.client("name=two");
    let refused = raw_http(server.ws, &handshake_request("/ws", ""));
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(first);
    let deadline = Instant::now() + secs(5);
    loop {
        let response = status(handshake_request("/ws", ""));
        if response.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a place never freed up: {response}"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling a condition, with a deadline
    }
}

#[test]
fn any_origin_when_star_is_allowed() {
    let server = TestServer::start_with(|c| c.allowed_origins = switchboard::config::Origins::Any);
    let response = raw_http(
        server.ws,
        &handshake_request("/ws", "Origin: http://evil.example\r\n"),
    );
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
}

#[test]
fn the_server_pings_and_drops_a_peer_silent_for_two_intervals() {
    let server = TestServer::start_with(|c| c.ping_interval = Duration::from_millis(300));
    // A raw socket that completes the handshake, then never answers anything.
    let mut silent = TcpStream::connect(server.ws).expect("connect");
    silent
        .write_all(handshake_request("/ws", "").as_bytes())
        .expect("handshake");
    silent.set_read_timeout(Some(secs(5))).expect("timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match silent.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the silent peer was not dropped: {e}"),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "dropped too early: {took:?}"
    );
    assert!(took < secs(3), "dropped too late: {took:?}");
    // A ping frame is 0x89 0x00 (server frames are unmasked).
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "no ping was sent"
    );

    // A client that answers pings (tungstenite does, while reading) stays.
    let mut lively = server.client("name=lively");
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(matches!(
            lively.next(Duration::from_millis(100)),
            Got::TimedOut | Got::Text(_)
        ));
    }
    lively.say("lobby", "still here after five intervals");
}

#[test]
fn shutdown_sends_1001_to_every_client() {
    let mut server = TestServer::start();
    let mut a = server.client("name=a");
    let mut b = server.client("room=dev&name=b");
    let report = server.stop();
    assert!(report.clean, "{report:?}");
    expect_close(&mut a, 1001);
    expect_close(&mut b, 1001);
}

/// A handshake for `/ws` with its own `Host` and `Origin` lines.
fn handshake_from(host: &str, origin: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\r\n"
    )
}

#[test]
fn issue_17_dns_rebinding_is_refused_while_the_pages_own_origin_is_accepted() {
    let server = TestServer::start();
    let (http_port, ws_port) = (server.http.port(), server.ws.port());
    let status = |host: &str, origin: &str| status_line(server.ws, &handshake_from(host, origin));

    // The attacker's page on a name it rebound to 127.0.0.1: its Host and
    // Origin agree with each other, and name no address of this server.
    let rebound_host = format!("evil.example:{ws_port}");
    for origin in [
        "http://evil.example".to_string(),
        format!("http://evil.example:{http_port}"),
    ] {
        let got = status(&rebound_host, &origin);
        assert!(got.starts_with("HTTP/1.1 403"), "{origin}: {got}");
    }
    // Another port of this very host is another site, not the chat page.
    let elsewhere = status(&server.ws.to_string(), "http://127.0.0.1:1");
    assert!(elsewhere.starts_with("HTTP/1.1 403"), "{elsewhere}");

    // The chat page's own origin: the bound HTTP address, and loopback by name.
    let page = format!("http://{}", server.http);
    let got = status(&server.ws.to_string(), &page);
    assert!(got.starts_with("HTTP/1.1 101"), "{page}: {got}");
    let by_name = format!("http://localhost:{http_port}");
    let got = status(&format!("localhost:{ws_port}"), &by_name);
    assert!(got.starts_with("HTTP/1.1 101"), "{by_name}: {got}");
}

#[test]
fn issue_17_a_public_host_is_accepted_on_its_port_or_else_the_http_and_scheme_ports() {
    let server = TestServer::start_with(|c| {
        c.public_hosts = vec![
            "chat.test".parse().expect("valid"),
            "proxy.test:8443".parse().expect("valid"),
        ];
    });
    let http_port = server.http.port();
    let status = |origin: &str| {
        let host = origin.split_once("://").map_or(origin, |(_, h)| h);
        status_line(server.ws, &handshake_from(host, origin))
    };
    for allowed in [
        "https://chat.test".to_string(),
        "http://chat.test".to_string(),
        format!("http://chat.test:{http_port}"),
        "https://proxy.test:8443".to_string(),
        format!("http://{}", server.http),
    ] {
        let got = status(&allowed);
        assert!(got.starts_with("HTTP/1.1 101"), "{allowed}: {got}");
    }
    for refused in [
        "http://chat.test:1".to_string(),
        "https://proxy.test".to_string(),
        format!("http://proxy.test:{http_port}"),
        format!("http://evil.example:{http_port}"),
    ] {
        let got = status(&refused);
        assert!(got.starts_with("HTTP/1.1 403"), "{refused}: {got}");
    }
}
