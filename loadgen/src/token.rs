//! The marker each published message carries, and the scanner that finds it.
//!
//! The load generator must work against any broadcast server, so it cannot rely
//! on a framing of its own: a server may deliver the text as sent (gorilla's chat
//! hub), wrap it in a JSON event (switchboard), put it in an SSE `data:` line, or
//! join several queued messages into one frame separated by newlines. The marker
//! is therefore a compact ASCII token that survives all of those untouched (no
//! characters JSON would escape) and is found by scanning every received payload:
//!
//! ```text
//! LG|<trial>|<publisher>|<seq>|<scheduled µs>|xxxxxxxx…   (padded to --size)
//! ```
//!
//! `scheduled µs` is the time the message *should* have been sent, on the load
//! generator's monotonic clock. Latency is measured from it, not from the moment
//! the publisher got round to sending, so a publisher that falls behind shows up
//! as latency rather than as a quieter test (coordinated omission).

use std::sync::LazyLock;
use std::time::Instant;

use memchr::memmem::Finder;

/// Bytes every marker starts with.
const PREFIX: &[u8] = b"LG|";

/// The byte used to pad a message up to the requested size.
const PAD: u8 = b'x';

static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(PREFIX));

/// The process-wide origin of the scheduled and received timestamps.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Microseconds since the process-wide epoch (monotonic).
pub fn now_us() -> u64 {
    micros_since_epoch(Instant::now())
}

/// Microseconds from the process-wide epoch to `at` (0 if `at` is earlier).
pub fn micros_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_micros()).unwrap_or(u64::MAX)
}

/// The instant `us` microseconds after the process-wide epoch.
pub fn instant_at(us: u64) -> Instant {
    *EPOCH + std::time::Duration::from_micros(us)
}

/// What one marker says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Which trial (run of publishers) sent it; stale trials are ignored.
    pub trial: u32,
    /// Index of the publisher that sent it.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// Scheduled send time, µs since the epoch.
    pub scheduled_us: u64,
}

/// Appends the message text for `marker`, padded with `x` to `size` bytes (a
/// marker longer than `size` is written whole).
pub fn encode(out: &mut Vec<u8>, marker: &Marker, size: usize) {
    let start = out.len();
    out.extend_from_slice(PREFIX);
    for value in [
        u64::from(marker.trial),
        u64::from(marker.publisher),
        marker.seq,
        marker.scheduled_us,
    ] {
        push_decimal(out, value);
        out.push(b'|');
    }
    let written = out.len() - start;
    if written < size {
        out.resize(start + size, PAD);
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Calls `found` for every well-formed marker in `payload`; returns how many
/// marker prefixes were malformed (truncated or not numeric).
pub fn scan(payload: &[u8], mut found: impl FnMut(Marker)) -> u64 {
    let mut malformed = 0;
    for at in FINDER.find_iter(payload) {
        match parse_at(&payload[at + PREFIX.len()..]) {
            Some(marker) => found(marker),
            None => malformed += 1,
        }
    }
    malformed
}

/// Parses `trial|publisher|seq|scheduled|` at the start of `rest`.
fn parse_at(rest: &[u8]) -> Option<Marker> {
    let mut fields = [0u64; 4];
    let mut pos = 0;
    for field in fields.iter_mut() {
        let (value, used) = parse_field(&rest[pos..])?;
        *field = value;
        pos += used;
    }
    Some(Marker {
        trial: u32::try_from(fields[0]).ok()?,
        publisher: u32::try_from(fields[1]).ok()?,
        seq: fields[2],
        scheduled_us: fields[3],
    })
}

/// Parses decimal digits terminated by `|`; returns the value and the bytes used
/// including the terminator.
fn parse_field(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(21) {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            b'|' if i > 0 => return Some((value, i + 1)),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Marker {
        Marker {
            trial: 3,
            publisher: 1,
            seq,
            scheduled_us: 12_345_678,
        }
    }

    #[test]
    fn encodes_to_the_requested_size() {
        let mut out = Vec::new();
        encode(&mut out, &sample(7), 64);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(b"LG|3|1|7|12345678|xxx"));
    }

    #[test]
    fn a_marker_longer_than_size_is_written_whole() {
        let mut out = Vec::new();
        encode(&mut out, &sample(7), 4);
        assert_eq!(out, b"LG|3|1|7|12345678|");
    }

    #[test]
    fn finds_markers_wrapped_in_json_and_joined_by_newlines() {
        let mut frame = Vec::new();
        frame.extend_from_slice(br#"{"type":"message","text":""#);
        encode(&mut frame, &sample(1), 40);
        frame.extend_from_slice(b"\"}\n");
        encode(&mut frame, &sample(2), 40);
        frame.push(b'\n');
        let mut seen = Vec::new();
        let malformed = scan(&frame, |m| seen.push(m));
        assert_eq!(malformed, 0);
        assert_eq!(seen, vec![sample(1), sample(2)]);
    }

    #[test]
    fn truncated_or_garbled_markers_are_counted_not_reported() {
        let mut seen = 0;
        assert_eq!(scan(b"LG|1|2|3", |_| seen += 1), 1);
        assert_eq!(scan(b"LG|a|2|3|4|", |_| seen += 1), 1);
        assert_eq!(scan(b"LG||2|3|4|", |_| seen += 1), 1);
        assert_eq!(seen, 0);
    }
}
