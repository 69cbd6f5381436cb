//! Sending one generated case and judging what came back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::arena::Kind;
use crate::gen::frames::{self, op, Expect};
use crate::gen::heads::{self, Answer};
use crate::wire::{self, End, FrameReader, Incoming};

/// What one case got wrong.
pub type Failures = Vec<(Kind, String)>;

/// How long the server gets to answer or close.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a server may keep a half-closed HTTP connection (a request
/// deadline of 10 s plus slack).
const CLOSE_WITHIN: Duration = Duration::from_secs(12);

/// Runs a WebSocket frame case against `ws`.
pub fn ws_frames(ws: SocketAddr, case: &frames::Case) -> Failures {
    let mut failures = Vec::new();
    let mut fail = |kind, what: String| failures.push((kind, what));
    let (mut stream, leftover) = match wire::ws_open(ws, &case.path) {
        Ok(opened) => opened,
        Err(e) => {
            fail(Kind::Core, format!("the handshake failed: {e}"));
            return failures;
        }
    };
    let mut reader = FrameReader::new(leftover);
    let sent = wire::send(&mut stream, &case.pieces);
    let deadline = Instant::now() + ANSWER_WITHIN;
    match &case.expect {
        Expect::Alive { echoes, pongs } => {
            if let Err(e) = sent {
                fail(Kind::Expected, format!("a valid sequence, yet {e}"));
                return failures;
            }
            let probe = b"probe".to_vec();
            let _ = wire::send(&mut stream, &[piece(wire::client_frame(op::PING, &probe))]);
            let mut got_echoes = Vec::new();
            let mut got_pongs = Vec::new();
            loop {
                match reader.next(&mut stream, deadline) {
                    Incoming::Pong(p) if p == probe => break,
                    Incoming::Pong(p) => got_pongs.push(p),
                    Incoming::Ping(_) => {}
                    Incoming::Message(kind, payload) => {
                        check_event(&case.path, kind, &payload, &mut fail);
                        got_echoes.push((kind, payload));
                    }
                    other => {
                        fail(
                            Kind::Expected,
                            format!(
                                "a valid sequence, then a ping: got {other:?} instead of the pong"
                            ),
                        );
                        return failures;
                    }
                }
            }
            if &got_pongs != pongs {
                fail(
                    Kind::Expected,
                    format!("pongs {} came as {}", show_all(pongs), show_all(&got_pongs)),
                );
            }
            if case.path == "/echo" && &got_echoes != echoes {
                let want: Vec<_> = echoes.iter().map(|(k, p)| (k, wire::show(p))).collect();
                let got: Vec<_> = got_echoes.iter().map(|(k, p)| (k, wire::show(p))).collect();
                fail(
                    Kind::Expected,
                    format!("/echo returned {got:?}, not {want:?}"),
                );
            }
            let close = wire::client_frame(op::CLOSE, &1000u16.to_be_bytes());
            let _ = wire::send(&mut stream, &[piece(close)]);
            expect_close(&mut reader, &mut stream, Some(1000), &mut fail);
        }
        Expect::Close { code, why, at } => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let what = format!("frame #{at}: {why}");
            expect_close_for(&mut reader, &mut stream, *code, &what, &mut fail);
        }
        Expect::Ended => {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            loop {
                match reader.next(&mut stream, deadline) {
                    Incoming::Ended(End::StillOpen) => {
                        fail(
                            Kind::Expected,
                            "still open 5 s after the client half-closed mid-frame".into(),
                        );
                        break;
                    }
                    Incoming::Ended(_) => break,
                    _ => {}
                }
            }
        }
    }
    failures
}

fn piece(bytes: Vec<u8>) -> crate::gen::Piece {
    crate::gen::Piece { bytes, pause_ms: 0 }
}

fn show_all(payloads: &[Vec<u8>]) -> String {
    let shown: Vec<String> = payloads.iter().map(|p| wire::show(p)).collect();
    format!("{shown:?}")
}

/// What the chat sends must be JSON, or in text mode, lines with nothing a
/// terminal would act on (issue 17 finding 13).
fn check_event(path: &str, kind: u8, payload: &[u8], fail: &mut impl FnMut(Kind, String)) {
    if !path.starts_with("/ws") {
        return;
    }
    if kind != op::TEXT {
        fail(
            Kind::Expected,
            format!("/ws sent a binary frame: {}", wire::show(payload)),
        );
        return;
    }
    let text = String::from_utf8_lossy(payload);
    if path.contains("format=text") {
        if let Some(c) = text.chars().find(|&c| unsafe_for_terminals(c)) {
            fail(
                Kind::Expected,
                format!(
                    "a text-mode line carries U+{:04X} raw (issue 17 finding 13): {text:?}",
                    c as u32
                ),
            );
        }
    } else if serde_json::from_str::<serde_json::Value>(&text).is_err() {
        fail(
            Kind::Expected,
            format!("/ws sent an event that is not JSON: {text:?}"),
        );
    }
}

/// Control characters (C0, DEL, C1), and the bidi controls and line
/// separators a terminal or a renderer would act on (the set in
/// docs/limits.md, "Text mode").
pub fn unsafe_for_terminals(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

fn expect_close(
    reader: &mut FrameReader,
    stream: &mut std::net::TcpStream,
    code: Option<u16>,
    fail: &mut impl FnMut(Kind, String),
) {
    expect_close_for(reader, stream, code, "the client's close 1000", fail);
}

/// Reads until the server's close frame: it must carry `code`, and the
/// connection must then end.
fn expect_close_for(
    reader: &mut FrameReader,
    stream: &mut std::net::TcpStream,
    code: Option<u16>,
    what: &str,
    fail: &mut impl FnMut(Kind, String),
) {
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        match reader.next(stream, deadline) {
            Incoming::Close(got) => {
                if got != code {
                    fail(
                        Kind::Expected,
                        format!("{what}: closed with {got:?}, not {code:?}"),
                    );
                }
                break;
            }
            Incoming::Ended(end) => {
                fail(
                    Kind::Expected,
                    format!("{what}: expected close {code:?}, the connection ended ({end:?})"),
                );
                return;
            }
            Incoming::Broken(why) => {
                fail(
                    Kind::Expected,
                    format!("{what}: the server sent a broken frame: {why}"),
                );
                return;
            }
            _ => {}
        }
    }
    loop {
        match reader.next(stream, deadline) {
            Incoming::Ended(End::StillOpen) => {
                fail(
                    Kind::Expected,
                    format!("{what}: still open 5 s after the close frames"),
                );
                return;
            }
            Incoming::Ended(_) => return,
            _ => {}
        }
    }
}

/// Runs a head case (HTTP port, or the WebSocket port's handshake).
pub fn head(addr: SocketAddr, case: &heads::Case) -> Failures {
    let mut failures = Vec::new();
    let mut stream = match wire::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            failures.push((Kind::Core, e));
            return failures;
        }
    };
    let _ = wire::send(&mut stream, &case.pieces); // an early close is judged below
    if case.answers == [Answer::Upgrade] {
        match wire::read_upgrade(&mut stream, Instant::now() + ANSWER_WITHIN) {
            Ok(leftover) => {
                let mut reader = FrameReader::new(leftover);
                let probe = wire::client_frame(op::PING, b"hs");
                let close = wire::client_frame(op::CLOSE, &1000u16.to_be_bytes());
                let _ = wire::send(&mut stream, &[piece(probe), piece(close)]);
                let mut fail = |kind, what| failures.push((kind, what));
                expect_close(&mut reader, &mut stream, Some(1000), &mut fail);
            }
            Err(e) => failures.push((Kind::Expected, format!("a valid handshake {e}"))),
        }
        return failures;
    }
    let (bytes, end) = wire::finish(&mut stream, CLOSE_WITHIN);
    let (responses, broken) = match wire::responses(&bytes) {
        Ok(all) => (all, None),
        Err((some, why)) => (some, Some(why)),
    };
    for (i, answer) in case.answers.iter().enumerate() {
        let got = responses.get(i).map(|r| r.status);
        let ok = match (answer, got) {
            (Answer::Status(want), Some(status)) => want.contains(&status),
            (Answer::Final(want), Some(status)) => {
                want.contains(&status) && responses.len() == i + 1
            }
            (Answer::Refused, Some(status)) => status >= 400 && responses.len() == i + 1,
            (Answer::Refused | Answer::Any, None) => true,
            (Answer::Any, Some(_)) => true,
            _ => false,
        };
        if !ok {
            let all: Vec<u16> = responses.iter().map(|r| r.status).collect();
            failures.push((
                Kind::Expected,
                format!("request #{i} wanted {answer:?}; the answers were {all:?} ({end:?})"),
            ));
            break;
        }
        if !matches!(answer, Answer::Status(_)) {
            break; // nothing after a final request is judged
        }
    }
    if let Some(why) = broken {
        if case.answers.iter().all(|a| matches!(a, Answer::Status(_))) {
            failures.push((
                Kind::Expected,
                format!("the answers stopped making sense: {why}"),
            ));
        }
    }
    if end == End::StillOpen {
        failures.push((
            Kind::Expected,
            format!(
                "still open {CLOSE_WITHIN:?} after the client half-closed (issue 17 finding 4)"
            ),
        ));
    }
    failures
}
