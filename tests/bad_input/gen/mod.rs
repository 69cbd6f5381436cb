//! Seeded bad input: WebSocket frames, WebSocket handshakes and HTTP request
//! heads, each case with what a correct server must do with it.
//!
//! Two users share this code: the bad-input suite (`tests/bad_input.rs`), which
//! sends each case and checks the answer, and `loadgen soak`, which includes
//! these files by path and sends cases at a low rate for minutes. It is plain
//! `std`, so both can.
//!
//! Everything follows from one `u64` seed (see [`Rng`]): the same seed gives
//! the same bytes, the same split into writes and the same pauses, so a
//! failure is replayed by setting the seed the failure message prints.
//! Whether the server's threads interleave the same way is not in our hands;
//! the input is.
//!
//! Why not `proptest`: its strength is shrinking a failing input of a pure
//! function, but a case here is judged against a live server whose state
//! (rooms, history, threads) the earlier cases changed, so a shrunk case
//! would not fail the same way; and `loadgen`, a different crate, must
//! generate the same cases, which a small dependency-free generator allows.

#![allow(dead_code, unused_imports)] // the suite and loadgen each use a different part

pub mod frames;
pub mod heads;
mod rng;

pub use rng::{seed_from_env, Rng};

/// Bytes written with one `write` call, then a pause: how a case reaches the
/// socket. Splitting frames and heads at random places exercises every
/// partial-read path of the server's parsers.
#[derive(Clone, Debug)]
pub struct Piece {
    /// What to write.
    pub bytes: Vec<u8>,
    /// How long to wait after writing it, in milliseconds.
    pub pause_ms: u64,
}

/// Splits `bytes` into pieces: half the time in one write, otherwise at up to
/// eight random places with pauses of 0-2 ms.
pub fn split(rng: &mut Rng, bytes: Vec<u8>) -> Vec<Piece> {
    if bytes.len() < 2 || rng.percent(50) {
        return vec![Piece { bytes, pause_ms: 0 }];
    }
    let mut cuts: Vec<usize> = (0..rng.between(1, 8))
        .map(|_| rng.between(1, bytes.len() - 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        pieces.push(Piece {
            bytes: bytes[start..cut].to_vec(),
            pause_ms: rng.below(3),
        });
        start = cut;
    }
    pieces
}

/// Texts people and programs might send: words, accents, CJK, emoji, and
/// what a terminal or a bidi renderer would act on (escapes, BEL, NUL, DEL,
/// C1 controls, U+202E, U+200E, U+061C, U+2028). Never `|`, which the load
/// generator's markers use.
pub fn text(rng: &mut Rng, max_chars: usize) -> String {
    const PARTS: &[&str] = &[
        "hello",
        "world",
        " ",
        " ",
        "ça va",
        "漢字",
        "😀",
        "\u{1b}[2J",
        "\u{1b}]0;pwned\u{7}",
        "\u{7}",
        "\u{0}",
        "\u{202e}",
        "\u{2028}",
        "\t",
        "\r\n",
        "\"",
        "\\",
        "{}",
        "/",
        "<b>",
        "%00",
        "ÿ",
        "\u{9b}31m",
        "\u{200e}",
        "\u{61c}",
        "\u{85}",
        "\u{7f}",
    ];
    let mut out = String::new();
    let chars = rng.between(0, max_chars);
    while out.chars().count() < chars {
        if rng.percent(70) {
            out.push(char::from(b'a' + rng.below(26) as u8));
        } else {
            out.push_str(rng.pick(PARTS));
        }
    }
    out
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `bytes` the way a description shows them: printable ASCII as is,
/// the rest escaped, cut after `max` bytes.
pub fn show(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes[..bytes.len().min(max)]
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        out.push_str(&format!("...({} bytes)", bytes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{frames, heads, Rng};

    #[test]
    fn one_seed_gives_one_input_and_another_seed_another() {
        let bytes = |seed| {
            let mut out = Vec::new();
            for i in 0..50 {
                let mut rng = Rng::derive(seed, &format!("ws-frames/{i}"));
                let case = frames::case(&mut rng, i % 2 == 0, 65536);
                out.extend(case.pieces.iter().flat_map(|p| p.bytes.clone()));
                let mut rng = Rng::derive(seed, &format!("http-heads/{i}"));
                out.extend(
                    heads::http_case(&mut rng)
                        .pieces
                        .iter()
                        .flat_map(|p| p.bytes.clone()),
                );
            }
            out
        };
        assert_eq!(bytes(7), bytes(7), "one seed, one input");
        assert_ne!(bytes(7), bytes(8), "another seed, another input");
    }
}
