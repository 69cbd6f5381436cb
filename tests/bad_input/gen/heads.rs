//! HTTP request heads, for the WebSocket handshake and for the HTTP port:
//! well-formed ones with a known answer, ones the issue names an answer for
//! (`400` for `Content-Length` with `Transfer-Encoding` or two lengths, `414`
//! and `431` for huge heads), and noise (control bytes, NUL, bare LF,
//! obs-fold, odd methods, versions and targets) that must get some answer or
//! a close, never a crash or a hang.

use super::{json_string, split, text, Piece, Rng};

/// What the server must answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// One of these statuses, and the connection may carry on.
    Status(Vec<u16>),
    /// One of these statuses, or a close without an answer; nothing after.
    Final(Vec<u16>),
    /// Anything but `2xx`, or a close; nothing after it is checked.
    Refused,
    /// Any answer or a close; nothing after it is checked.
    Any,
    /// `101 Switching Protocols`, then a working WebSocket.
    Upgrade,
}

/// A generated case: one or more requests written back to back, then the
/// client half-closes and reads until the server closes.
#[derive(Clone, Debug)]
pub struct Case {
    /// What each request must get, in order.
    pub answers: Vec<Answer>,
    /// The requests, for failure messages.
    pub requests: Vec<Vec<u8>>,
    /// The bytes, split into writes.
    pub pieces: Vec<Piece>,
}

impl Case {
    /// The requests, escaped and cut to a readable length.
    pub fn describe(&self) -> String {
        self.requests
            .iter()
            .zip(&self.answers)
            .map(|(r, a)| format!("\n    {:?} <- {}", a, super::show(r, 300)))
            .collect()
    }
}

/// A request being put together.
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    line_end: &'static str,
}

impl Request {
    fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("Host".into(), "127.0.0.1".into())],
            body: Vec::new(),
            line_end: "\r\n",
        }
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn without(mut self, name: &str) -> Request {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn body(mut self, content_type: &str, body: &[u8]) -> Request {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.headers
            .push(("Content-Length".into(), body.len().to_string()));
        self.body = body.to_vec();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let end = self.line_end;
        let mut out = format!("{} {} {}{end}", self.method, self.target, self.version);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}{end}"));
        }
        out.push_str(end);
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A WebSocket handshake for the WS port: a valid one, one with a single
/// defined fault, or noise.
pub fn handshake_case(rng: &mut Rng) -> Case {
    let key: String = {
        // 16 random bytes, base64: any 22 characters of the alphabet and "==".
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut k: String = (0..21)
            .map(|_| char::from(ALPHABET[rng.below(64) as usize]))
            .collect();
        k.push(rng.pick(&['A', 'Q', 'g', 'w']));
        k + "=="
    };
    let path = rng.pick(&["/echo", "/ws?room=fz0", "/ws?room=fz1&name=hs&format=text"]);
    let valid = Request::new("GET", path)
        .header("Upgrade", rng.pick(&["websocket", "WebSocket"]))
        .header("Connection", rng.pick(&["Upgrade", "keep-alive, Upgrade"]))
        .header("Sec-WebSocket-Key", &key)
        .header("Sec-WebSocket-Version", "13");
    let (request, answer) = match rng.below(16) {
        0..=3 => (valid, Answer::Upgrade),
        4 => (
            Request {
                target: "/nope".into(),
                ..valid
            },
            Answer::Final(vec![404]),
        ),
        5 => (
            Request {
                target: rng
                    .pick(&["/ws?room=a%20b", "/ws?since=abc", "/ws?format=xml"])
                    .into(),
                ..valid
            },
            Answer::Final(vec![400]),
        ),
        6 => (
            Request {
                method: rng.pick(&["POST", "PUT", "DELETE"]).into(),
                ..valid
            },
            Answer::Final(vec![405]),
        ),
        7 => (valid.without("Upgrade"), Answer::Final(vec![426])),
        8 => (valid.without("Connection"), Answer::Final(vec![426])),
        9 => (
            valid
                .without("Sec-WebSocket-Version")
                .header("Sec-WebSocket-Version", rng.pick(&["8", "12", "14", "x"])),
            Answer::Final(vec![426]),
        ),
        10 => (valid.without("Sec-WebSocket-Key"), Answer::Final(vec![400])),
        11 => (
            valid.header("Origin", "http://evil.example"),
            Answer::Final(vec![403]),
        ),
        12 => (
            valid.header("X-Pad", &"p".repeat(rng.between(9 * 1024, 20 * 1024))),
            Answer::Final(vec![431]),
        ),
        _ => (noise(rng, valid), Answer::Any),
    };
    let mut bytes = request.bytes();
    let mut answer = answer;
    if rng.percent(5) {
        // The head never ends: the client gives up and half-closes.
        bytes.truncate(bytes.len() - 2);
        answer = Answer::Final(vec![400, 408]);
    }
    Case {
        answers: vec![answer],
        requests: vec![bytes.clone()],
        pieces: split(rng, bytes),
    }
}

/// Requests for the HTTP port, pipelined up to four deep.
pub fn http_case(rng: &mut Rng) -> Case {
    let mut requests = Vec::new();
    let mut answers = Vec::new();
    let depth = if rng.percent(25) {
        rng.between(2, 4)
    } else {
        1
    };
    for i in 0..depth {
        let last = i + 1 == depth;
        let (request, answer) = if last && rng.percent(45) {
            final_request(rng)
        } else {
            plain_request(rng)
        };
        let mut request = request;
        if last && rng.percent(30) {
            request = request.header("Connection", "close");
        }
        requests.push(request.bytes());
        answers.push(answer);
    }
    let bytes = requests.concat();
    Case {
        answers,
        requests,
        pieces: split(rng, bytes),
    }
}

/// A well-formed request with one known answer.
fn plain_request(rng: &mut Rng) -> (Request, Answer) {
    let room = rng.pick(&["fz0", "fz1", "fz2"]);
    let (request, statuses) = match rng.below(11) {
        0 => (Request::new("GET", "/healthz"), vec![200]),
        1 => (Request::new("GET", "/rooms"), vec![200]),
        2 => (Request::new("GET", "/metrics"), vec![200]),
        3 => (
            Request::new("GET", &format!("/rooms/{room}")),
            vec![200, 404],
        ),
        4 => (
            Request::new("GET", &format!("/rooms/{room}/messages?since=0&limit=5")),
            vec![200, 404],
        ),
        5 => (
            Request::new("GET", rng.pick(&["/nope", "/rooms/fz0/nope", "/healthz/x"])),
            vec![404],
        ),
        6 => {
            let body = format!(
                r#"{{"text":{},"from":"fuzz"}}"#,
                json_string(&text(rng, 100))
            );
            let target = format!("/rooms/{room}/messages");
            (
                Request::new("POST", &target).body("application/json", body.as_bytes()),
                vec![202],
            )
        }
        7 => {
            let target = format!("/rooms/{room}/messages");
            let words = text(rng, 100).replace('\0', " ");
            let words = if words.trim().is_empty() {
                "hi".into()
            } else {
                words
            };
            (
                Request::new("POST", &target).body("text/plain", words.as_bytes()),
                vec![202],
            )
        }
        8 => {
            let target = format!("/rooms/{room}/messages");
            let body = rng.pick(&[&br#"{"text":"#[..], b"{}", b"[]", br#"{"text":5}"#]);
            (
                Request::new("POST", &target).body("application/json", body),
                vec![400],
            )
        }
        9 => {
            let target = format!("/rooms/{room}/messages");
            (
                Request::new("POST", &target).body("image/png", b"\x89PNG"),
                vec![415],
            )
        }
        _ => (Request::new("DELETE", "/rooms"), vec![404, 405]),
    };
    let request = if rng.percent(30) {
        request.header(
            rng.pick(&["X-Fuzz", "user-agent", "ACCEPT", "x-a-b-c"]),
            rng.pick(&["1", "", "text/html, */*;q=0.8", "  spaced  "]),
        )
    } else {
        request
    };
    (request, Answer::Status(statuses))
}

/// A request after which the connection may end: one the issue names an
/// answer for, a broken body, or noise.
fn final_request(rng: &mut Rng) -> (Request, Answer) {
    let room = rng.pick(&["fz0", "fz1"]);
    let target = format!("/rooms/{room}/messages");
    match rng.below(12) {
        0 => {
            // Content-Length and Transfer-Encoding: what a proxy and the server
            // disagree on. The body hides a second request.
            let smuggled = "0\r\n\r\nPOST /rooms/watch/messages HTTP/1.1\r\nHost: x\r\n\
                            Content-Type: text/plain\r\nContent-Length: 8\r\n\r\nSMUGGLED";
            let mut request = Request::new("POST", &target)
                .header("Content-Type", "text/plain")
                .header("Content-Length", &smuggled.len().to_string())
                .header(
                    "Transfer-Encoding",
                    rng.pick(&["chunked", "Chunked", " chunked", "gzip, chunked"]),
                );
            if rng.percent(50) {
                request.headers.rotate_right(1); // TE before CL
            }
            request.body = smuggled.as_bytes().to_vec();
            (request, Answer::Final(vec![400]))
        }
        1 => {
            let mut request = Request::new("POST", &target)
                .header("Content-Type", "text/plain")
                .header("Content-Length", "5")
                .header("Content-Length", rng.pick(&["6", "50", "0"]));
            request.body = b"hello SMUGGLED".to_vec();
            (request, Answer::Final(vec![400]))
        }
        2 => (
            Request::new(
                "GET",
                &format!("/{}", "u".repeat(rng.between(64, 200) * 1024)),
            ),
            Answer::Final(vec![414]),
        ),
        3 => {
            let mut request = Request::new("GET", "/healthz");
            for i in 0..rng.between(1_000, 3_000) {
                request = request.header(&format!("X-H{i}"), "v");
            }
            (request, Answer::Final(vec![431]))
        }
        4 => (
            Request::new("GET", "/healthz")
                .header("X-Long", &"l".repeat(rng.between(64, 200) * 1024)),
            Answer::Final(vec![431]),
        ),
        5 => {
            let size = rng.pick(&["zz", "-1", "fffffffffffffffffffff", "1 2", "0x5", ""]);
            let mut request = Request::new("POST", &target)
                .header("Content-Type", "text/plain")
                .header("Transfer-Encoding", "chunked");
            request.body = format!("{size}\r\nhello\r\n0\r\n\r\n").into_bytes();
            (request, Answer::Refused)
        }
        6 => {
            let length = rng.pick(&["-1", "abc", "1e3", "+5", "5 5", "0x10"]);
            let mut request = Request::new("POST", &target)
                .header("Content-Type", "text/plain")
                .header("Content-Length", length);
            request.body = b"hello".to_vec();
            (request, Answer::Refused)
        }
        _ => {
            let (request, _) = plain_request(rng);
            (noise(rng, request), Answer::Any)
        }
    }
}

/// Breaks a request in one to three ways no well-behaved client would.
fn noise(rng: &mut Rng, mut request: Request) -> Request {
    for _ in 0..rng.between(1, 3) {
        match rng.below(12) {
            0 => {
                request.method = rng
                    .pick(&["BREW", "G\0T", "get", "PRI", "CONNECT", "", "GET GET", "Ü"])
                    .to_string()
            }
            1 => {
                request.version = rng
                    .pick(&[
                        "HTTP/1.0",
                        "HTTP/2.0",
                        "HTTP/0.9",
                        "HTTP/1.2",
                        "HTTPS/1.1",
                        "HTTP/1.1 x",
                        "",
                        "HTTP/11",
                    ])
                    .to_string()
            }
            2 => {
                request.target = rng
                    .pick(&[
                        "/%zz%00/../healthz",
                        "http://127.0.0.1/healthz",
                        "*",
                        "",
                        "//healthz",
                        "/rooms/%ff%fe/messages",
                        "/healthz#frag",
                        "/\0",
                    ])
                    .to_string()
            }
            3 => request.target = format!("/{}", "a".repeat(rng.between(1, 20) * 1024)),
            4 => request.line_end = "\n",
            5 => request
                .headers
                .push(("X-Folded".into(), "a\r\n  continued".into())),
            6 => {
                let bad = rng.pick(&["\0", "\u{1}", "\u{7f}", "\u{1b}[2J", "\r", "\n"]);
                request.headers.push(("X-Ctl".into(), format!("a{bad}b")));
            }
            7 => {
                let name = rng.pick(&["X Space", "X:Colon", "X\0Nul", "", " X-Lead", "X-Trail "]);
                request.headers.push((name.into(), "v".into()));
            }
            8 => request = request.without("Host"),
            9 => request
                .headers
                .push(("Host".into(), "second.example".into())),
            10 => request.headers.push((
                "Expect".into(),
                rng.pick(&["100-continue", "nonsense"]).into(),
            )),
            _ => {
                request.headers.push(("X-Big".into(), text(rng, 2000)));
            }
        }
    }
    request
}
