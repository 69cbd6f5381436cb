//! The protocol's unit tests: both dialects in, every encoding out, and
//! the byte counts history relies on.

use super::event::EVENT_BYTES;
use super::request::nesting_exceeds;
use super::*;

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("test room names are valid")
}

#[test]
fn slash_commands_and_plain_lines() {
    assert_eq!(parse_line("/join dev"), Ok(Request::Join(room("dev"))));
    assert_eq!(parse_line("/leave  dev "), Ok(Request::Leave(room("dev"))));
    assert_eq!(parse_line("/who"), Ok(Request::Who(None)));
    assert_eq!(parse_line("/rooms"), Ok(Request::Rooms));
    assert_eq!(parse_line("/help"), Ok(Request::Help));
    assert_eq!(
        parse_line("hello there"),
        Ok(Request::Say {
            room: None,
            text: "hello there".into()
        })
    );
    assert_eq!(
        parse_line("/shrug ok"),
        Ok(Request::Say {
            room: None,
            text: "/shrug ok".into()
        })
    );
    assert_eq!(parse_line("/join bad room").unwrap_err().code(), "bad_room");
    assert_eq!(parse_line("/join").unwrap_err().code(), "bad_request");
    assert_eq!(parse_line("/nick \u{7}").unwrap_err().code(), "bad_name");
    assert_eq!(parse_line("   ").unwrap_err().code(), "bad_request");
    assert_eq!(
        parse_line("typed at a terminal\r\n"),
        Ok(Request::Say {
            room: None,
            text: "typed at a terminal".into()
        })
    );
}

#[test]
fn json_commands() {
    assert_eq!(
        parse_line(r#"{"type":"message","room":"dev","text":"hi"}"#),
        Ok(Request::Say {
            room: Some(room("dev")),
            text: "hi".into()
        })
    );
    assert_eq!(parse_line(r#"{"type":"rooms"}"#), Ok(Request::Rooms));
    assert_eq!(parse_line(r#"{"type":"who"}"#), Ok(Request::Who(None)));
    assert_eq!(
        parse_line(r#"{"type":"join","room":"a b"}"#)
            .unwrap_err()
            .code(),
        "bad_room"
    );
    assert_eq!(
        parse_line(r#"{"type":"dance"}"#).unwrap_err().code(),
        "bad_request"
    );
    assert_eq!(
        parse_line(r#"{"type":"message""#).unwrap_err().code(),
        "bad_request"
    );
    let deep = "{\"a\":".repeat(10_000);
    assert_eq!(parse_line(&deep).unwrap_err().code(), "bad_request");
    assert!(nesting_exceeds(r#"{"a":[[[[]]]]}"#, 4));
    assert!(!nesting_exceeds(r#"{"a":"[[[[[[[[\"{{{{{{"}"#, 1));
}

/// What an event holds with every encoding cached, measured.
fn measured_bytes(event: &Event) -> usize {
    let _ = (event.ws_frame(Format::Json), event.ws_frame(Format::Text));
    let _ = event.sse_block();
    let text = match event.body() {
        Body::Message { text, .. } => text.capacity(),
        _ => 0,
    };
    let cached = event.json.get().expect("cached").capacity()
        + event.ws_json.get().expect("cached").len()
        + event.ws_text.get().expect("cached").len()
        + event.sse.get().expect("cached").capacity();
    EVENT_BYTES + text + cached
}

fn assert_holds_at_least_what_it_measures(event: &Event, text: &str) {
    let (held, measured) = (event.held_bytes(), measured_bytes(event));
    assert!(
        held >= measured,
        "{held} < {measured} for {:?}…",
        text.chars().take(24).collect::<String>()
    );
}

#[test]
fn held_bytes_is_at_least_what_an_event_holds_with_every_encoding_cached() {
    let texts = [
        "hi".to_owned(),
        "x".repeat(70_000),
        "quotes \" and \\ backslashes \"\"".to_owned(),
        "lines\r\nand\ttabs\n".repeat(100),
        "\u{1b}[2J\u{1b}]0;title\u{7} and \u{0}".repeat(50),
        "Zoë ünïcödé 🎉 \u{202e}reversed\u{2028}".repeat(100),
        "del\u{7f} csi\u{9b} \u{61c}\u{2066}\\x1b \\\\ \\u{41}".repeat(100),
    ];
    for text in texts {
        for id in [1, u64::MAX] {
            let message = Event::new(Body::Message {
                room: room(&"r".repeat(64)),
                id,
                from: Name::parse("\"quoted\" \\ name").expect("valid"),
                from_id: "c18446744073709551615".into(),
                text: text.clone(),
                ts: u64::MAX,
            });
            assert_holds_at_least_what_it_measures(&message, &text);
        }
        let plain = Event::new(Body::Message {
            room: room("lobby"),
            id: 42,
            from: Name::parse("alice").expect("valid"),
            from_id: "c3".into(),
            text: text.clone(),
            ts: 1764000000000,
        });
        assert_holds_at_least_what_it_measures(&plain, &text);
    }
    let plain = Event::new(Body::Message {
        room: room("lobby"),
        id: 42,
        from: Name::parse("alice").expect("valid"),
        from_id: "c3".into(),
        text: "x".repeat(1000),
        ts: 1764000000000,
    });
    let over = plain.held_bytes() - measured_bytes(&plain);
    assert!(
        over < 400,
        "plain text is counted closely: {over} bytes over"
    );
    for body in [
        Body::Joined {
            room: room("lobby"),
            id: u64::MAX,
            name: Name::parse("\\\\\\").expect("valid"),
            from_id: "c1".into(),
            ts: u64::MAX,
        },
        Body::Left {
            room: room("lobby"),
            id: 7,
            name: Name::parse("bob").expect("valid"),
            from_id: "c1".into(),
            ts: 0,
        },
    ] {
        let event = Event::new(body);
        assert!(event.held_bytes() >= measured_bytes(&event));
    }
}

#[test]
fn events_encode_as_the_spec_shows() {
    let event = Event::new(Body::Message {
        room: room("lobby"),
        id: 42,
        from: Name::parse("alice").expect("valid"),
        from_id: "c3".into(),
        text: "hi".into(),
        ts: 1764000000000,
    });
    assert_eq!(
        event.json(),
        r#"{"type":"message","room":"lobby","id":42,"from":"alice","from_id":"c3","text":"hi","ts":1764000000000}"#
    );
    assert_eq!(event.text_line(), "[lobby] alice: hi");
    let two_lines = Event::new(Body::Message {
        room: room("lobby"),
        id: 43,
        from: Name::parse("alice").expect("valid"),
        from_id: "c3".into(),
        text: "one\ntwo".into(),
        ts: 0,
    });
    assert_eq!(two_lines.text_line(), "[lobby] alice: one\\ntwo");
    assert!(event
        .sse_block()
        .starts_with(b"id: 42\nevent: message\ndata: {"));
    assert!(event.sse_block().ends_with(b"}\n\n"));
    let frame = event.ws_frame(Format::Json);
    assert_eq!(frame[0], 0x81, "FIN + text opcode");
    assert_eq!(&frame[2..], event.json().as_bytes());
    let error = ParseError::BadRoom.to_event();
    assert_eq!(
        error.text_line(),
        "! bad_room: room names are 1-64 characters of A-Z a-z 0-9 _ - ."
    );
}

/// Reads an escaped line back, by the rule `escape_unprintable` documents.
fn unescape(line: &str) -> String {
    let hex = |digits: &str| {
        char::from_u32(u32::from_str_radix(digits, 16).expect("hex")).expect("a char")
    };
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (c, used) = match after.chars().next() {
            Some('\\') => ('\\', 1),
            Some('n') => ('\n', 1),
            Some('r') => ('\r', 1),
            Some('t') => ('\t', 1),
            Some('x') => (hex(&after[1..3]), 3),
            Some('u') => {
                let end = after.find('}').expect("a \\u{..} is closed");
                (hex(&after[2..end]), end + 1)
            }
            _ => ('\\', 0), // a backslash before anything else is itself
        };
        out.push(c);
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

#[test]
fn text_mode_escapes_every_unprintable_character_visibly() {
    let escaped = |text: &str| escape_unprintable(text).into_owned();
    assert_eq!(
        escaped("\x1b[2J\x1b]0;title\x07"),
        r"\x1b[2J\x1b]0;title\x07"
    );
    assert_eq!(escaped("a\r\nb\tc\0d\x7f"), r"a\r\nb\tc\x00d\x7f");
    assert_eq!(escaped("csi\u{9b}31m nel\u{85}"), r"csi\u{9b}31m nel\u{85}");
    assert_eq!(
        escaped("\u{202e}olleh \u{2066}\u{2069} \u{200e}\u{200f}\u{61c}"),
        r"\u{202e}olleh \u{2066}\u{2069} \u{200e}\u{200f}\u{61c}"
    );
    assert_eq!(escaped("one\u{2028}two\u{2029}"), r"one\u{2028}two\u{2029}");
    // What people type stays as typed: letters of any script, emoji with
    // their joiners, a lone backslash.
    for plain in ["Zoë ﺱ 名前", "👩‍💻", r"¯\_(ツ)_/¯", r"C:\Temp", "tail\\"] {
        assert_eq!(escaped(plain), plain);
    }
}

#[test]
fn an_escape_cannot_be_spoofed_with_backslashes_of_ones_own() {
    // Text that looks like an escape is told apart from the real thing.
    assert_eq!(escaped_line(r"\x1b"), r"\\x1b");
    assert_eq!(escaped_line("\x1b"), r"\x1b");
    assert_eq!(escaped_line(r"lit\n"), r"lit\\n");
    assert_eq!(escaped_line("\\\x1b"), r"\\\x1b");
    assert_eq!(escaped_line(r"\\a"), r"\\\a");
    // And every line reads back as exactly what was sent.
    for text in [
        r"\x1b",
        "\x1b",
        "\\\x1b",
        "\\\\\u{202e}",
        r"\u{202e}",
        r"\\\n",
        "\\\n\\",
        "\\",
        r"\q\",
        "mixed \\ \\\\ \\x \\u{41} \u{2028}\\\u{9b}",
    ] {
        let line = escaped_line(text);
        assert!(!line.chars().any(is_unprintable), "{line:?}");
        assert_eq!(unescape(&line), text, "{text:?} was written {line:?}");
    }
}

fn escaped_line(text: &str) -> String {
    escape_unprintable(text).into_owned()
}

#[test]
fn a_whole_text_line_is_escaped_and_json_stays_json() {
    let event = Event::new(Body::Message {
        room: room("lobby"),
        id: 1,
        from: Name::parse("alice").expect("valid"),
        from_id: "c3".into(),
        text: "\x1b[2J\u{202e}x\u{2028}y\x7f".into(),
        ts: 0,
    });
    assert_eq!(
        event.text_line(),
        r"[lobby] alice: \x1b[2J\u{202e}x\u{2028}y\x7f"
    );
    let frame = event.ws_frame(Format::Text);
    assert!(!frame[2..].iter().any(|&b| b < 0x20 || b == 0x7f));
    // serde escapes the C0 controls; the rest is valid JSON as it is,
    // and reads back as the text that was sent.
    assert!(
        event.json().contains(r#""text":"\u001b[2J"#),
        "{}",
        event.json()
    );
    let back: serde_json::Value = serde_json::from_str(event.json()).expect("valid JSON");
    assert_eq!(back["text"], "\x1b[2J\u{202e}x\u{2028}y\x7f");
    // An error quoting what a peer sent is escaped as well.
    let quoted = ParseError::BadRequest("unknown variant `\x1b]0;t\x07`".into()).to_event();
    assert_eq!(
        quoted.text_line(),
        r"! bad_request: unknown variant `\x1b]0;t\x07`"
    );
}
