//! WebSocket frames from a client, mostly well-formed, some broken on purpose,
//! and the oracle that says what RFC 6455 (as tungstenite applies it) makes a
//! server do with them.
//!
//! A case is a plan of messages (single frames or fragments with control
//! frames between them, chat commands on `/ws`, text and binary on `/echo`)
//! in which a few frames are corrupted: reserved opcode, RSV bits, no mask,
//! a length over the limit or non-minimal, a fragmented or oversized control
//! frame, a stray continuation, invalid UTF-8 (split across fragments too),
//! close codes valid and invalid, or a frame cut short. The [`Peer`] oracle
//! then walks the frames in order, exactly as the server reads them, and
//! decides the outcome: the connection lives (and echoes, and pongs), it is
//! failed with a close code, or it is left hanging mid-frame.

use super::{json_string, split, text, Piece, Rng};

/// Opcodes of RFC 6455.
pub mod op {
    /// Continues a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// How a frame writes its payload length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    /// The shortest form (7, 16 or 64 bits).
    Minimal,
    /// 16 bits even when 7 would do (legal to parse, not to send).
    Wide16,
    /// 64 bits even when fewer would do.
    Wide64,
    /// The header claims this many bytes (64-bit form) and none follow.
    Claims(u64),
}

/// One client frame, as it will be written.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1..3 as the three bits `0b0xyz`.
    pub rsv: u8,
    /// 0..=15, reserved ones included.
    pub opcode: u8,
    /// The masking key, or `None` for an unmasked frame.
    pub mask: Option<[u8; 4]>,
    /// How the length is written.
    pub length: Length,
    /// The unmasked payload.
    pub payload: Vec<u8>,
}

/// What the server must do with a whole case.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Nothing wrong: the connection lives. Each completed data message comes
    /// back as it was (`/echo` only), each ping gets a pong with its payload,
    /// in order.
    Alive {
        /// `(opcode, payload)` of each message `/echo` returns.
        echoes: Vec<(u8, Vec<u8>)>,
        /// Payloads of the pongs owed.
        pongs: Vec<Vec<u8>>,
    },
    /// The server closes with this code (`None`: a close frame with no code)
    /// after frame number `at`.
    Close {
        /// The code in the server's close frame.
        code: Option<u16>,
        /// Which rule decided it.
        why: &'static str,
        /// Index of the deciding frame.
        at: usize,
    },
    /// The last frame is cut short: the server can only wait for the rest;
    /// the client then half-closes and the connection must end.
    Ended,
}

/// A generated case.
#[derive(Clone, Debug)]
pub struct Case {
    /// `/echo` or `/ws?...`.
    pub path: String,
    /// The frames, each already judged.
    pub frames: Vec<Frame>,
    /// Bytes of the last frame actually sent, when it is cut short.
    pub cut: Option<usize>,
    /// What the server must do.
    pub expect: Expect,
    /// The bytes, split into writes.
    pub pieces: Vec<Piece>,
}

impl Case {
    /// One line per frame, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = format!("{} then:", self.path);
        for (i, frame) in self.frames.iter().enumerate() {
            out.push_str(&format!("\n    #{i} {}", frame.describe()));
        }
        if let Some(cut) = self.cut {
            out.push_str(&format!("\n    (the last frame cut after {cut} bytes)"));
        }
        out
    }
}

impl Frame {
    /// A masked, final frame with the minimal length.
    pub fn new(opcode: u8, payload: Vec<u8>, mask: [u8; 4]) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(mask),
            length: Length::Minimal,
            payload,
        }
    }

    /// The frame on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0x0F));
        let masked = u8::from(self.mask.is_some()) << 7;
        let len = self.payload.len() as u64;
        match self.length {
            Length::Claims(claimed) => {
                out.push(masked | 127);
                out.extend_from_slice(&claimed.to_be_bytes());
            }
            Length::Minimal if len < 126 => out.push(masked | len as u8),
            Length::Minimal | Length::Wide16 if len <= 0xFFFF => {
                out.push(masked | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(masked | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
        if !matches!(self.length, Length::Claims(_)) {
            let at = out.len();
            out.extend_from_slice(&self.payload);
            for (i, b) in out[at..].iter_mut().enumerate() {
                *b ^= self.mask.map_or(0, |m| m[i % 4]);
            }
        }
        out
    }

    /// Bytes of the header (length and mask key included).
    pub fn header_len(&self) -> usize {
        self.encode().len()
            - if matches!(self.length, Length::Claims(_)) {
                0
            } else {
                self.payload.len()
            }
    }

    /// One line: opcode, bits, length form, payload.
    pub fn describe(&self) -> String {
        let name = match self.opcode {
            op::CONTINUATION => "CONT".to_string(),
            op::TEXT => "TEXT".to_string(),
            op::BINARY => "BINARY".to_string(),
            op::CLOSE => "CLOSE".to_string(),
            op::PING => "PING".to_string(),
            op::PONG => "PONG".to_string(),
            other => format!("RESERVED-{other:#x}"),
        };
        format!(
            "{name}{}{}{} len={} {:?}: {}",
            if self.fin { " fin" } else { "" },
            if self.rsv != 0 {
                format!(" rsv={:03b}", self.rsv)
            } else {
                String::new()
            },
            if self.mask.is_some() { "" } else { " UNMASKED" },
            self.payload.len(),
            self.length,
            super::show(&self.payload, 60)
        )
    }
}

/// The server's side of the conversation, as far as the protocol goes.
#[derive(Debug)]
pub struct Peer {
    limit: usize,
    /// The fragmented message being assembled: its opcode and bytes so far.
    message: Option<(u8, Vec<u8>)>,
    echoes: Vec<(u8, Vec<u8>)>,
    pongs: Vec<Vec<u8>>,
}

/// What one frame did.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Read and accepted; the connection goes on.
    Accepted,
    /// The connection ends with this close code (`None`: no code).
    Closes(Option<u16>, &'static str),
    /// The server is still waiting for the rest of this frame.
    Waiting,
}

impl Peer {
    /// A peer with `--max-message-size` `limit` (frames and messages).
    pub fn new(limit: usize) -> Peer {
        Peer {
            limit,
            message: None,
            echoes: Vec::new(),
            pongs: Vec::new(),
        }
    }

    /// Judges `frame`, of which only `sent` bytes arrive (`None`: all).
    /// The order of the checks is the order the server makes them in:
    /// header (opcode, then length), payload, mask, RSV bits, then the rules
    /// for control frames and for messages.
    pub fn judge(&mut self, frame: &Frame, sent: Option<usize>) -> Step {
        let proto = |why| Step::Closes(Some(1002), why);
        let header_len = frame.header_len();
        if sent.is_some_and(|s| s < header_len) {
            return Step::Waiting;
        }
        if matches!(frame.opcode, 0x3..=0x7 | 0xB..=0xF) {
            return proto("reserved opcode");
        }
        let claimed = match frame.length {
            Length::Claims(n) => n,
            _ => frame.payload.len() as u64,
        };
        if claimed > self.limit as u64 {
            return Step::Closes(Some(1009), "frame over --max-message-size");
        }
        if sent.is_some() || matches!(frame.length, Length::Claims(_)) {
            return Step::Waiting;
        }
        if frame.mask.is_none() {
            return proto("unmasked client frame");
        }
        if frame.rsv != 0 {
            return proto("RSV bits without an extension");
        }
        let payload = &frame.payload;
        match frame.opcode {
            op::CLOSE | op::PING | op::PONG => {
                if !frame.fin {
                    return proto("fragmented control frame");
                }
                if payload.len() > 125 {
                    return proto("control frame over 125 bytes");
                }
                match frame.opcode {
                    op::PING => {
                        self.pongs.push(payload.clone());
                        Step::Accepted
                    }
                    op::PONG => Step::Accepted,
                    _ => close_reply(payload),
                }
            }
            op::CONTINUATION => {
                let Some((kind, mut bytes)) = self.message.take() else {
                    return proto("continuation without a message");
                };
                if bytes.len() + payload.len() > self.limit {
                    return Step::Closes(Some(1009), "message over --max-message-size");
                }
                bytes.extend_from_slice(payload);
                self.message_part(kind, bytes, frame.fin)
            }
            _ => {
                if self.message.is_some() {
                    return proto("new message inside a fragmented one");
                }
                self.message_part(frame.opcode, payload.clone(), frame.fin)
            }
        }
    }

    fn message_part(&mut self, kind: u8, bytes: Vec<u8>, fin: bool) -> Step {
        if kind == op::TEXT {
            let invalid = match std::str::from_utf8(&bytes) {
                Ok(_) => false,
                // Checked as it arrives: a sequence that cannot become valid
                // fails at once; an incomplete one at the end may still be
                // completed by the next fragment, unless this was the last.
                Err(e) => e.error_len().is_some() || fin,
            };
            if invalid {
                return Step::Closes(Some(1007), "invalid UTF-8 in a text message");
            }
        }
        if fin {
            self.echoes.push((kind, bytes));
        } else {
            self.message = Some((kind, bytes));
        }
        Step::Accepted
    }
}

/// The server's reply to a close frame with this payload.
fn close_reply(payload: &[u8]) -> Step {
    match payload.len() {
        0 => Step::Closes(None, "close without a code, answered in kind"),
        1 => Step::Closes(Some(1002), "close payload of one byte"),
        _ => {
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Step::Closes(Some(1007), "close reason not UTF-8");
            }
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if close_code_allowed(code) {
                Step::Closes(Some(code), "close, answered with its own code")
            } else {
                Step::Closes(Some(1002), "close code not allowed on the wire")
            }
        }
    }
}

/// Whether a peer may send `code` (RFC 6455 7.4, as tungstenite reads it).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A case for `/ws` (`chat`) or `/echo`, with messages up to `limit` bytes.
pub fn case(rng: &mut Rng, chat: bool, limit: usize) -> Case {
    let path = if chat {
        let room = rng.pick(&["fz0", "fz1", "fz2", "watch"]);
        let format = rng.pick(&["", "&format=text", "&format=json"]);
        format!("/ws?room={room}&name=fuzz{}", format)
    } else {
        "/echo".to_string()
    };
    let mut frames = Vec::new();
    for _ in 0..rng.between(1, 6) {
        plan_group(rng, chat, limit, &mut frames);
    }
    for frame in &mut frames {
        if rng.percent(7) {
            corrupt(rng, frame, limit);
        }
    }
    if rng.percent(10) {
        frames.push(close_frame(rng));
    }
    let cut = if rng.percent(5) {
        let whole = frames.last().map_or(0, |f| f.encode().len());
        (whole > 1).then(|| rng.between(1, whole - 1))
    } else {
        None
    };
    let mut peer = Peer::new(limit);
    let mut expect = None;
    for (i, frame) in frames.iter().enumerate() {
        let sent = if i + 1 == frames.len() { cut } else { None };
        match peer.judge(frame, sent) {
            Step::Accepted => {}
            Step::Waiting => {
                expect = Some(Expect::Ended);
                frames.truncate(i + 1);
                break;
            }
            Step::Closes(code, why) => {
                expect = Some(Expect::Close { code, why, at: i });
                // The server reads no further; a little more arrives anyway.
                frames.truncate(i + 1 + rng.between(0, 2));
                break;
            }
        }
    }
    let cut = if matches!(expect, Some(Expect::Ended)) {
        cut
    } else {
        None
    };
    let expect = expect.unwrap_or(Expect::Alive {
        echoes: peer.echoes,
        pongs: peer.pongs,
    });
    let mut bytes = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let encoded = frame.encode();
        match cut {
            Some(n) if i + 1 == frames.len() => bytes.extend_from_slice(&encoded[..n]),
            _ => bytes.extend_from_slice(&encoded),
        }
    }
    Case {
        path,
        frames,
        cut,
        expect,
        pieces: split(rng, bytes),
    }
}

fn mask(rng: &mut Rng) -> [u8; 4] {
    if rng.percent(5) {
        [0; 4] // a legal key that leaves the payload as it is
    } else {
        rng.next_u64().to_le_bytes()[..4]
            .try_into()
            .expect("four bytes")
    }
}

/// Appends one message (maybe fragmented, with control frames between the
/// fragments) or one control frame.
fn plan_group(rng: &mut Rng, chat: bool, limit: usize, frames: &mut Vec<Frame>) {
    match rng.below(10) {
        0 => {
            let payload = rng.bytes_between(0, 125);
            frames.push(Frame::new(op::PING, payload, mask(rng)));
        }
        1 => {
            let payload = rng.bytes_between(0, 20);
            frames.push(Frame::new(op::PONG, payload, mask(rng)));
        }
        _ => {
            let (opcode, payload) = message(rng, chat, limit);
            let fragments = if payload.len() > 1 && rng.percent(30) {
                rng.between(2, 4)
            } else {
                1
            };
            let mut cuts: Vec<usize> = (1..fragments)
                .map(|_| rng.between(0, payload.len()))
                .collect();
            cuts.sort_unstable();
            let mut start = 0;
            for (i, end) in cuts.into_iter().chain([payload.len()]).enumerate() {
                if i > 0 && rng.percent(30) {
                    let ping = rng.bytes_between(0, 10);
                    frames.push(Frame::new(op::PING, ping, mask(rng)));
                }
                let mut frame = Frame::new(
                    if i == 0 { opcode } else { op::CONTINUATION },
                    payload[start..end].to_vec(),
                    mask(rng),
                );
                frame.fin = end == payload.len();
                frames.push(frame);
                start = end;
            }
        }
    }
}

/// A data message: a chat command on `/ws`, text or bytes on `/echo`;
/// now and then a big one (up to a little over the limit) or invalid UTF-8.
fn message(rng: &mut Rng, chat: bool, limit: usize) -> (u8, Vec<u8>) {
    if rng.percent(4) {
        let len = rng.between(limit / 2, limit + limit / 8);
        let opcode = if rng.percent(50) {
            op::TEXT
        } else {
            op::BINARY
        };
        return (opcode, vec![b'x'; len]);
    }
    if rng.percent(6) {
        let mut bytes = text(rng, 20).into_bytes();
        let bad: &[u8] = rng.pick(&[
            &[0x80][..],
            &[0xC0, 0x80],
            &[0xED, 0xA0, 0x80],
            &[0xF5, 0x80, 0x80, 0x80],
            &[0xFF],
            &[0xE2, 0x82], // a truncated euro sign: invalid only at the end
        ]);
        let at = rng.between(0, bytes.len());
        // Keep `at` on a character boundary so only `bad` is invalid.
        let at = (0..=at)
            .rev()
            .find(|&i| is_boundary(&bytes, i))
            .unwrap_or(0);
        bytes.splice(at..at, bad.iter().copied());
        return (op::TEXT, bytes);
    }
    if chat {
        if rng.percent(8) {
            return (op::BINARY, rng.bytes_between(0, 64));
        }
        return (op::TEXT, chat_line(rng).into_bytes());
    }
    if rng.percent(40) {
        (op::BINARY, rng.bytes_between(0, 300))
    } else {
        (op::TEXT, text(rng, 200).into_bytes())
    }
}

fn is_boundary(bytes: &[u8], i: usize) -> bool {
    i == 0 || i == bytes.len() || (bytes[i] & 0xC0) != 0x80
}

/// A chat command as a person or a program would send it, valid or not.
pub fn chat_line(rng: &mut Rng) -> String {
    let room = rng.pick(&[
        "fz0", "fz1", "fz2", "watch", "lobby", "", "a b", "ü", "r.-_9",
    ]);
    let long_room = "r".repeat(65);
    let room = if rng.percent(5) { &long_room } else { room };
    let name = rng.pick(&["alice", "", "\u{202e}evil", "bob\u{1b}[2J", "n", "x y"]);
    let words = text(rng, 80);
    match rng.below(13) {
        0 | 1 => format!(
            r#"{{"type":"message","room":{},"text":{}}}"#,
            json_string(room),
            json_string(&words)
        ),
        2 => format!(r#"{{"type":"message","text":{}}}"#, json_string(&words)),
        3 => format!(r#"{{"type":"join","room":{}}}"#, json_string(room)),
        4 => format!(r#"{{"type":"leave","room":{}}}"#, json_string(room)),
        5 => format!(r#"{{"type":"nick","name":{}}}"#, json_string(name)),
        6 => format!(r#"{{"type":"who","room":{}}}"#, json_string(room)),
        7 => r#"{"type":"rooms"}"#.to_string(),
        8 => format!(
            "/{} {}",
            rng.pick(&["join", "leave", "nick", "who", "rooms", "help", "nope"]),
            room
        ),
        9 => words,
        10 => rng
            .pick(&[
                r#"{"type":"message""#,
                r#"{"type":5}"#,
                r#"{"type":"message","text":null}"#,
                r#"{"type":"nope"}"#,
                r#"[1,2,3]"#,
                r#"{"type":"message","text":"x","room":{"a":1}}"#,
                "{}",
                "",
            ])
            .to_string(),
        11 => "[".repeat(rng.between(100, 3000)),
        _ => format!(
            r#"{{"type":"message","room":"fz0","text":"{}"}}"#,
            "y".repeat(rng.between(100, 4000))
        ),
    }
}

/// Breaks one thing about `frame`.
fn corrupt(rng: &mut Rng, frame: &mut Frame, limit: usize) {
    match rng.below(9) {
        0 => frame.rsv = rng.between(1, 7) as u8,
        1 => frame.opcode = rng.pick(&[3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]),
        2 => frame.mask = None,
        3 => {
            let claims = rng.pick(&[limit as u64 + 1, 1 << 32, 1 << 63, u64::MAX, 50_000_000_000]);
            frame.length = Length::Claims(claims);
        }
        4 => frame.length = rng.pick(&[Length::Wide16, Length::Wide64]),
        5 => frame.fin = !frame.fin,
        6 => frame.opcode = rng.pick(&[op::CONTINUATION, op::TEXT, op::BINARY]),
        7 => frame.payload = rng.bytes_between(126, 300), // too long for a control frame
        _ => {
            frame.opcode = rng.pick(&[op::PING, op::CLOSE]);
            frame.fin = false;
        }
    }
}

/// A close frame: empty, one byte, allowed or disallowed codes, with a
/// reason that is or is not UTF-8.
fn close_frame(rng: &mut Rng) -> Frame {
    let payload = match rng.below(6) {
        0 => Vec::new(),
        1 => vec![0x03],
        _ => {
            let code: u16 = rng.pick(&[
                1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4000, 4999,
                0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2000, 2999, 5000, 65535,
            ]);
            let mut payload = code.to_be_bytes().to_vec();
            if rng.percent(20) {
                payload.extend_from_slice(&[0xC3, 0x28]); // not UTF-8
            } else {
                payload.extend_from_slice(text(rng, 20).as_bytes());
                payload.truncate(125);
                while std::str::from_utf8(&payload[2..]).is_err() {
                    payload.pop(); // the cut may split a character
                }
            }
            payload
        }
    };
    Frame::new(op::CLOSE, payload, mask(rng))
}

#[cfg(test)]
mod tests {
    use super::{op, Frame, Length, Peer, Step};

    #[test]
    fn the_oracle_follows_rfc_6455_as_tungstenite_reads_it() {
        let mask = [1, 2, 3, 4];
        let judge = |frames: Vec<Frame>| {
            let mut peer = Peer::new(1000);
            frames
                .iter()
                .map(|f| peer.judge(f, None))
                .find(|s| *s != Step::Accepted)
                .unwrap_or(Step::Accepted)
        };
        let text = |payload: &[u8], fin| Frame {
            fin,
            ..Frame::new(op::TEXT, payload.to_vec(), mask)
        };
        let cont = |payload: &[u8], fin| Frame {
            fin,
            ..Frame::new(op::CONTINUATION, payload.to_vec(), mask)
        };
        // "€" is E2 82 AC: split across fragments it is fine, cut short it is not.
        assert_eq!(
            judge(vec![text(b"\xE2\x82", false), cont(b"\xAC", true)]),
            Step::Accepted
        );
        assert_eq!(
            judge(vec![text(b"\xE2\x82", true)]),
            Step::Closes(Some(1007), "invalid UTF-8 in a text message")
        );
        assert_eq!(
            judge(vec![text(b"\xC0\x80", false)]),
            Step::Closes(Some(1007), "invalid UTF-8 in a text message")
        );
        assert!(matches!(
            judge(vec![cont(b"x", true)]),
            Step::Closes(Some(1002), _)
        ));
        assert!(matches!(
            judge(vec![text(b"a", false), text(b"b", true)]),
            Step::Closes(Some(1002), _)
        ));
        assert!(matches!(
            judge(vec![text(&[b'a'; 600], false), cont(&[b'b'; 600], true)]),
            Step::Closes(Some(1009), _)
        ));
        let claims = Frame {
            length: Length::Claims(u64::MAX),
            ..text(b"", true)
        };
        assert!(matches!(judge(vec![claims]), Step::Closes(Some(1009), _)));
        let reserved = Frame {
            opcode: 0xB,
            length: Length::Claims(u64::MAX),
            ..text(b"", true)
        };
        assert!(
            matches!(judge(vec![reserved]), Step::Closes(Some(1002), _)),
            "the opcode is checked first"
        );
        let wide = Frame {
            length: Length::Wide64,
            ..text(b"hi", true)
        };
        assert_eq!(
            judge(vec![wide]),
            Step::Accepted,
            "a non-minimal length is read, as tungstenite does"
        );
        let unmasked = Frame {
            mask: None,
            ..text(b"hi", true)
        };
        assert!(matches!(judge(vec![unmasked]), Step::Closes(Some(1002), _)));
        let close = |payload: &[u8]| Frame::new(op::CLOSE, payload.to_vec(), mask);
        assert!(matches!(
            judge(vec![close(&1000u16.to_be_bytes())]),
            Step::Closes(Some(1000), _)
        ));
        assert!(matches!(
            judge(vec![close(&1005u16.to_be_bytes())]),
            Step::Closes(Some(1002), _)
        ));
        assert!(matches!(
            judge(vec![close(&[3, 232, 0xC3, 0x28])]),
            Step::Closes(Some(1007), _)
        ));
        assert!(matches!(
            judge(vec![close(&[3])]),
            Step::Closes(Some(1002), _)
        ));
        assert!(matches!(judge(vec![close(&[])]), Step::Closes(None, _)));
        let ping = |fin, len| Frame {
            fin,
            ..Frame::new(op::PING, vec![0; len], mask)
        };
        assert!(matches!(
            judge(vec![ping(false, 1)]),
            Step::Closes(Some(1002), _)
        ));
        assert!(matches!(
            judge(vec![ping(true, 126)]),
            Step::Closes(Some(1002), _)
        ));
        assert_eq!(
            Frame {
                length: Length::Wide16,
                ..text(b"hi", true)
            }
            .encode()[1],
            0x80 | 126
        );
    }
}
