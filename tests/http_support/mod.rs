//! Clients for the HTTP side, over raw TCP so tests see the bytes as they
//! come: a one-shot HTTP request, and an SSE reader that undoes chunked
//! framing and parses the event stream, waiting with deadlines, never sleeps.

#![allow(dead_code)] // each test file uses a different part

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error with this status and code, and a message.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        let body = self.json();
        assert_eq!(body["error"], code, "error code in {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.len() > 5),
            "a message for people in {body}"
        );
        assert_eq!(self.header("Content-Type"), Some("application/json"));
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write the head");
    let _ = stream.write_all(body); // a server that refused early may have closed
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

/// `(name, transport)` of each member in a `GET /rooms/{room}` answer.
pub fn members_by_transport(detail: &Value) -> Vec<(Value, Value)> {
    detail["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["name"].clone(), m["transport"].clone()))
        .collect()
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One thing on an event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `retry: N`
    Retry(u64),
    /// `: text`
    Comment(String),
    /// An event block.
    Event {
        id: Option<u64>,
        event: String,
        data: Value,
    },
}

impl Item {
    pub fn data(&self) -> Option<&Value> {
        match self {
            Item::Event { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// A raw SSE client: the response head, then items as they come.
pub struct Sse {
    pub stream: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    /// Bytes off the socket not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body bytes not yet parsed.
    body: Vec<u8>,
    /// The event being read (fields so far).
    fields: Vec<(String, String)>,
    pub ended: bool,
    /// Items read while waiting for something else.
    pub seen: Vec<Item>,
}

impl Sse {
    /// `GET {path}` with extra header lines; returns once the head is read.
    pub fn connect(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)]) -> Sse {
        let stream = TcpStream::connect(addr).expect("connect to the HTTP port");
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        (&stream)
            .write_all(head.as_bytes())
            .expect("send the request");
        let mut sse = Sse {
            stream,
            status: 0,
            headers: Vec::new(),
            chunked: false,
            raw: Vec::new(),
            body: Vec::new(),
            fields: Vec::new(),
            ended: false,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let split = loop {
            if let Some(split) = find(&sse.raw, b"\r\n\r\n") {
                break split;
            }
            assert!(
                sse.fill(deadline),
                "no response head within 5 s: {:?}",
                String::from_utf8_lossy(&sse.raw)
            );
        };
        let response = parse_response(&sse.raw[..split + 4]);
        sse.raw.drain(..split + 4);
        sse.status = response.status;
        sse.headers = response.headers;
        sse.chunked = sse
            .header("Transfer-Encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if sse.status != 200 {
            sse.body = std::mem::take(&mut sse.raw);
        }
        sse
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next item, or `None` if the stream ended or `timeout` passed.
    pub fn next(&mut self, timeout: Duration) -> Option<Item> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(item) = self.parse_item() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            if !self.dechunk() && !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Reads until an item matches; panics after `timeout`, saying what came.
    pub fn wait_for(&mut self, want: impl Fn(&Item) -> bool, timeout: Duration) -> Item {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(item) if want(&item) => return item,
                Some(item) => self.seen.push(item),
                None => panic!(
                    "awaited SSE item did not come within {timeout:?} (ended: {}); \
                     every item this stream skipped so far, not only in this wait: {:?}",
                    self.ended, self.seen
                ),
            }
        }
    }

    /// Waits for `name`'s own `joined` in each of `rooms`: from then on it
    /// is owed everything published there. The response head alone does
    /// not say so: the stream writes it before the hub has heard of it.
    pub fn wait_seated(&mut self, name: &str, rooms: &[&str], timeout: Duration) {
        for room in rooms {
            self.wait_for_data(
                |d| d["type"] == "joined" && d["name"] == name && d["room"] == *room,
                timeout,
            );
        }
    }

    /// Waits for an event whose JSON data matches.
    pub fn wait_for_data(&mut self, want: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let item = self.wait_for(|i| i.data().is_some_and(&want), timeout);
        item.data().cloned().expect("an event")
    }

    /// Reads from the socket until `deadline`; false if nothing came (or EOF).
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).expect("timeout");
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    /// Moves complete chunks from `raw` to `body`; true if it moved any.
    fn dechunk(&mut self) -> bool {
        if !self.chunked {
            let moved = !self.raw.is_empty();
            self.body.append(&mut self.raw);
            return moved;
        }
        let mut moved = false;
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return moved;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
            let total = line_end + 2 + size + 2;
            if self.raw.len() < total {
                return moved;
            }
            assert_eq!(
                &self.raw[total - 2..total],
                b"\r\n",
                "a chunk ends with CRLF"
            );
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..total);
            moved = true;
            if size == 0 {
                self.ended = true;
                return moved;
            }
        }
    }

    /// Parses one item from complete lines in `body`.
    fn parse_item(&mut self) -> Option<Item> {
        loop {
            let end = self.body.iter().position(|&b| b == b'\n')?;
            let line = String::from_utf8(self.body[..end].to_vec()).expect("the stream is UTF-8");
            self.body.drain(..=end);
            if line.is_empty() {
                if self.fields.is_empty() {
                    continue; // a blank line after a comment: nothing to dispatch
                }
                let fields = std::mem::take(&mut self.fields);
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                if let Some(retry) = get("retry") {
                    return Some(Item::Retry(retry.parse().expect("retry is a number")));
                }
                let data = get("data").expect("an event has data");
                return Some(Item::Event {
                    id: get("id").map(|id| id.parse().expect("ids are numbers")),
                    event: get("event").unwrap_or_else(|| "message".into()),
                    data: serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}")),
                });
            }
            if let Some(comment) = line.strip_prefix(':') {
                return Some(Item::Comment(comment.trim().to_owned()));
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            self.fields.push((
                name.to_owned(),
                value.strip_prefix(' ').unwrap_or(value).to_owned(),
            ));
        }
    }
}

/// One Prometheus sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Samples from Prometheus text: `(name, labels, value)`, with a check that
/// every sample's family has a `# TYPE` line before it.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let family = parts.next().expect("a family name").to_owned();
            let kind = parts.next().expect("a type");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "untyped",
                    "unknown",
                    "info",
                    "stateset"
                ]
                .contains(&kind),
                "unknown metric type in {line:?}"
            );
            typed.push(family);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = inner
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (
                            k.to_owned(),
                            v.unwrap_or_else(|| panic!("unquoted label in {line:?}"))
                                .to_owned(),
                        )
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            typed.iter().any(|f| name == *f
                || name
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| s.starts_with('_'))),
            "sample {name} has no # TYPE line before it"
        );
        samples.push((name, labels, value));
    }
    samples
}

/// The value of one sample, by name and labels (all of them).
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}
