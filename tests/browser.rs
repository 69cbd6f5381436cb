//! The chat page in a real browser: headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol on a WebSocket (tungstenite, no npm).
//!
//! Two pages, alice and bob, open the page in the same room; alice types a
//! message and presses Enter; it must appear in bob's page and reach a
//! WebSocket client; both pages' presence lists must show both names.
//! Screenshots go to `target/chat-page.png` (desktop) and
//! `target/chat-page-phone.png` (a phone-sized window) for people to look at.
//!
//! Chromium missing is a failure, not a skip: CI installs it
//! (`scripts/test.sh`). For a local run without it, set
//! `SWITCHBOARD_SKIP_BROWSER=1`. `SWITCHBOARD_CHROMIUM` names another binary.

mod auth_support;
mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{secs, TestServer};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

#[test]
fn two_pages_chat_with_each_other_and_with_a_websocket_client() {
    if std::env::var("SWITCHBOARD_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SWITCHBOARD_SKIP_BROWSER=1: the browser test did NOT run");
        return;
    }
    let server = TestServer::start();
    let mut watcher = server.client("room=lobby&name=watcher");
    let chromium = Chromium::launch();
    let mut cdp = Cdp::connect(&chromium.devtools_url());

    let page_url = |name: &str| {
        format!(
            "http://{}/?name={name}&rooms=lobby&autoconnect=1",
            server.http
        )
    };
    let alice = cdp.open_page(&page_url("alice"), 1100, 720);
    let bob = cdp.open_page(&page_url("bob"), 1100, 720);

    // Presence: each page lists both names (and the watcher).
    let presence =
        "Array.from(document.querySelectorAll('#presence li')).map(li => li.textContent).join('|')";
    for page in [&alice, &bob] {
        cdp.wait_until(page, "presence lists alice and bob", presence, |v| {
            v.as_str()
                .is_some_and(|s| s.contains("alice") && s.contains("bob"))
        });
    }

    // alice types and presses Enter, as a person would.
    let text = "hello from a real browser";
    cdp.call(
        Some(&alice),
        "Runtime.evaluate",
        json!({"expression": "document.querySelector('#text').focus()"}),
    );
    cdp.call(Some(&alice), "Input.insertText", json!({"text": text}));
    for kind in ["keyDown", "keyUp"] {
        let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
        cdp.call(Some(&alice), "Input.dispatchKeyEvent", key);
    }

    let shown = format!(
        "Array.from(document.querySelectorAll('#messages .msg[data-id]')).some(m => m.textContent.includes({}))",
        json!(text)
    );
    cdp.wait_until(&bob, "bob's page shows alice's message", &shown, |v| {
        v == &json!(true)
    });
    cdp.wait_until(&alice, "alice's page shows her own message", &shown, |v| {
        v == &json!(true)
    });
    let event = watcher.wait_for(|e| e["type"] == "message" && e["text"] == text, secs(10));
    assert_eq!(event["from"], "alice");
    assert_eq!(event["room"], "lobby");
    let composer = cdp.eval(&alice, "document.querySelector('#text').value");
    assert_eq!(
        composer,
        json!(""),
        "Enter sent the message and cleared the box"
    );

    // A reply from the WebSocket client shows up in both pages.
    watcher.say("lobby", "hi from a terminal");
    let reply = "Array.from(document.querySelectorAll('#messages .msg')).some(m => m.textContent.includes('hi from a terminal'))";
    for page in [&alice, &bob] {
        cdp.wait_until(
            page,
            "the page shows the WebSocket client's reply",
            reply,
            |v| v == &json!(true),
        );
    }

    let target = target_dir();
    cdp.screenshot(&bob, &target.join("chat-page.png"));
    let phone = cdp.open_page(&page_url("carol"), 390, 780);
    cdp.wait_until(&phone, "the phone page shows the history", reply, |v| {
        v == &json!(true)
    });
    cdp.screenshot(&phone, &target.join("chat-page-phone.png"));
    drop(chromium); // killed by its PID
}

#[test]
fn the_page_reconnects_by_itself_after_a_server_restart() {
    if std::env::var("SWITCHBOARD_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SWITCHBOARD_SKIP_BROWSER=1: the browser test did NOT run");
        return;
    }
    // The restarted server must come back on the same ports, as a real one would.
    let (http, ws) = (free_port(), free_port());
    let on_fixed_ports = |c: &mut switchboard::Config| {
        c.http_addr = http;
        c.ws_addr = ws;
    };
    let mut server = TestServer::start_with(on_fixed_ports);
    let chromium = Chromium::launch();
    let mut cdp = Cdp::connect(&chromium.devtools_url());
    let page = cdp.open_page(
        &format!("http://{http}/?name=dana&rooms=lobby&autoconnect=1"),
        1000,
        700,
    );
    let status = "document.querySelector('#status').textContent.trim()";
    cdp.wait_until(&page, "the page connects", status, |v| {
        v == &json!("connected")
    });

    let report = server.stop();
    assert!(report.clean, "{report:?}");
    cdp.wait_until(
        &page,
        "the page notices the server went away",
        status,
        |v| v != &json!("connected"),
    );
    let server = TestServer::start_with(on_fixed_ports);
    cdp.wait_until(&page, "the page reconnects by itself", status, |v| {
        v == &json!("connected")
    });

    let count = |text: &str| {
        format!(
            "Array.from(document.querySelectorAll('#messages .msg[data-id]')).filter(m => m.textContent.includes({})).length",
            json!(text)
        )
    };
    for text in ["after the restart", "marker"] {
        let body = json!({"text": text, "from": "ops"}).to_string();
        let resp = common::raw_http(
            server.http,
            &format!(
                "POST /rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    cdp.wait_until(&page, "the marker arrives", &count("marker"), |v| {
        v == &json!(1)
    });
    let shown = cdp.eval(&page, &count("after the restart"));
    assert_eq!(
        shown,
        json!(1),
        "the message after the restart is shown exactly once"
    );
    drop(chromium);
}

#[test]
fn issue_17_a_page_on_a_rebound_name_can_neither_connect_nor_publish_while_the_real_page_can() {
    if std::env::var("SWITCHBOARD_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SWITCHBOARD_SKIP_BROWSER=1: the browser test did NOT run");
        return;
    }
    let server = TestServer::start();
    let mut watcher = server.client("room=lobby&name=watcher");
    let chromium = Chromium::launch();
    let mut cdp = Cdp::connect(&chromium.devtools_url());
    let (http_port, ws_port) = (server.http.port(), server.ws.port());
    // What a page can try: open a WebSocket on its own host name, publish to
    // its own origin, and publish across sites to the server's real address.
    let dial = |host: &str| {
        format!(
            "new Promise(done => {{ const ws = new WebSocket('ws://{host}:{ws_port}/ws?name=page'); \
             ws.onopen = () => {{ ws.close(); done('open'); }}; ws.onerror = () => done('refused'); }})"
        )
    };
    let publish = |url: &str, text: &str, mode: &str| {
        format!(
            "fetch('{url}', {{method: 'POST', mode: '{mode}', headers: {{'Content-Type': 'text/plain'}}, \
             body: '{text}'}}).then(r => r.type === 'opaque' ? 'sent' : r.status, () => 'failed')"
        )
    };
    let real = format!("http://127.0.0.1:{http_port}");

    // The attacker's page, served from this server under the rebound name.
    let rebound = cdp.open_page(
        &format!("http://rebound.test:{http_port}/healthz"),
        800,
        600,
    );
    cdp.wait_until(
        &rebound,
        "the rebound page loads",
        "document.body?.innerText",
        |v| v.as_str().is_some_and(|t| t.trim() == "ok"),
    );
    assert_eq!(
        cdp.eval_async(&rebound, &dial("rebound.test")),
        json!("refused")
    );
    let same_name = publish("/rooms/lobby/messages", "via the rebound name", "cors");
    assert_eq!(cdp.eval_async(&rebound, &same_name), json!(403));
    let cross_site = publish(
        &format!("{real}/rooms/lobby/messages"),
        "cross-site",
        "no-cors",
    );
    assert_eq!(cdp.eval_async(&rebound, &cross_site), json!("sent"));

    // The chat page's own origin can do both.
    let page = cdp.open_page(&format!("{real}/healthz"), 800, 600);
    cdp.wait_until(
        &page,
        "the real page loads",
        "document.body?.innerText",
        |v| v.as_str().is_some_and(|t| t.trim() == "ok"),
    );
    assert_eq!(cdp.eval_async(&page, &dial("127.0.0.1")), json!("open"));
    let own = publish("/rooms/lobby/messages", "from the real page", "cors");
    assert_eq!(cdp.eval_async(&page, &own), json!(202));

    let event = watcher.wait_for(|e| e["type"] == "message", secs(10));
    assert_eq!(
        event["text"], "from the real page",
        "seen before: {:?}",
        watcher.seen
    );
    let history = common::raw_http(
        server.http,
        "GET /rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        history.matches(r#""type":"message""#).count(),
        1,
        "{history}"
    );
    drop(chromium);
}

#[test]
fn a_page_logs_in_with_a_token_from_its_fragment_and_says_why_when_refused() {
    if std::env::var("SWITCHBOARD_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SWITCHBOARD_SKIP_BROWSER=1: the browser test did NOT run");
        return;
    }
    let server = TestServer::start_with(auth_support::hs256_server);
    let mut watcher_claims = auth_support::claims("watcher", &["team-*"]);
    watcher_claims["name"] = json!("watcher");
    let watcher_token = auth_support::hs(&watcher_claims);
    let mut watcher = server.client(&format!("room=team-a&token={watcher_token}"));
    let chromium = Chromium::launch();
    let mut cdp = Cdp::connect(&chromium.devtools_url());

    // The token's name wins over the page's ?name=; the token never appears in
    // the page's URL as the server sees it (a fragment is not sent).
    let mut alice = auth_support::claims("user-1", &["team-*"]);
    alice["name"] = json!("Alice");
    let first_exp = switchboard::auth::mint::now_secs() + 4;
    alice["exp"] = json!(first_exp);
    let url = format!(
        "http://{}/?name=mallory&rooms=team-a&autoconnect=1#token={}",
        server.http,
        auth_support::hs(&alice)
    );
    let page = cdp.open_page(&url, 1100, 720);
    let presence =
        "Array.from(document.querySelectorAll('#presence li')).map(li => li.textContent).join('|')";
    cdp.wait_until(
        &page,
        "presence lists Alice and the watcher",
        presence,
        |v| {
            v.as_str().is_some_and(|s| {
                s.contains("Alice") && s.contains("watcher") && !s.contains("mallory")
            })
        },
    );
    let address_bar = cdp.eval(&page, "location.href");
    assert!(
        !address_bar.as_str().unwrap_or("").contains("token"),
        "the token left the address bar: {address_bar}"
    );
    let text = "signed in with a token";
    cdp.call(
        Some(&page),
        "Runtime.evaluate",
        json!({"expression": "document.querySelector('#text').focus()"}),
    );
    cdp.call(Some(&page), "Input.insertText", json!({"text": text}));
    for kind in ["keyDown", "keyUp"] {
        let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
        cdp.call(Some(&page), "Input.dispatchKeyEvent", key);
    }
    let event = watcher.wait_for(|e| e["type"] == "message" && e["text"] == text, secs(10));
    assert_eq!(event["from"], "Alice");

    // A new #token= refreshes the connection: it outlives the first token.
    alice["exp"] = json!(first_exp + 3600);
    let fresh = format!("location.hash = 'token={}'", auth_support::hs(&alice));
    cdp.eval(&page, &fresh);
    let clock = "Math.floor(Date.now() / 1000)";
    cdp.wait_until(&page, "the first token's exp has passed", clock, |v| {
        v.as_u64().is_some_and(|now| now > first_exp + 1)
    });
    let later = "still here after the first exp";
    cdp.call(Some(&page), "Input.insertText", json!({"text": later}));
    for kind in ["keyDown", "keyUp"] {
        let key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"});
        cdp.call(Some(&page), "Input.dispatchKeyEvent", key);
    }
    watcher.wait_for(|e| e["type"] == "message" && e["text"] == later, secs(10));

    // Without a token, and with an expired one, the page says why and stops.
    let auth_err = "document.querySelector('#authErr').textContent";
    let bare = format!("http://{}/?rooms=team-a&autoconnect=1", server.http);
    let refused = cdp.open_page(&bare, 800, 600);
    cdp.wait_until(&refused, "the page says it needs a token", auth_err, |v| {
        v.as_str()
            .is_some_and(|s| s.contains("needs a signed token"))
    });
    let mut expired = auth_support::claims("user-1", &["team-*"]);
    expired["exp"] = json!(switchboard::auth::mint::now_secs() - 60);
    let stale = format!("{bare}#token={}", auth_support::hs(&expired));
    let stale = cdp.open_page(&stale, 800, 600);
    cdp.wait_until(&stale, "the page says the token expired", auth_err, |v| {
        v.as_str()
            .is_some_and(|s| s.contains("refused your token") && s.contains("expired"))
    });
    cdp.screenshot(&stale, &target_dir().join("chat-page-token-refused.png"));
    drop(chromium);
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// `target/`, where cargo builds (`CARGO_TARGET_DIR` if set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A headless Chromium we started; killed by PID when dropped, on failure too.
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    fn launch() -> Chromium {
        let binary = std::env::var("SWITCHBOARD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&profile).expect("a fresh profile directory");
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                // A name that resolves to this machine, as an attacker's
                // would once its DNS is rebound (see issue 17's test).
                "--host-resolver-rules=MAP rebound.test 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary:?} ({e}). The browser test needs Debian's chromium \
                     (`apt-get install -y chromium`; scripts/test.sh does it). \
                     Set SWITCHBOARD_SKIP_BROWSER=1 to skip it on a machine without one."
                )
            });
        Chromium { child, profile }
    }

    /// The browser's DevTools WebSocket URL, from the `DevToolsActivePort`
    /// file Chromium writes once it listens (port 0: it picked one).
    fn devtools_url(&self) -> String {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a file Chromium writes, with a deadline
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill(); // our own child, by PID
        let _ = self.child.wait();
        // Its helper processes may still be closing files in the profile.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One attached page: its DevTools session.
struct Page {
    session: String,
}

/// A DevTools protocol client over one WebSocket to the browser.
struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let (ws, _) = tungstenite::connect(url)
            .unwrap_or_else(|e| panic!("connect to DevTools at {url}: {e}"));
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            stream
                .set_read_timeout(Some(secs(30)))
                .expect("a read timeout");
        }
        Cdp { ws, next_id: 0 }
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            command["sessionId"] = json!(page.session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .expect("send a DevTools command");
        loop {
            let message = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if answer["id"] != id {
                continue; // an event, or someone else's answer
            }
            if let Some(error) = answer.get("error") {
                panic!("{method} failed: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Opens `url` in a new page of `width`×`height` and attaches to it.
    fn open_page(&mut self, url: &str, width: u32, height: u32) -> Page {
        let created = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target = created["targetId"]
            .as_str()
            .expect("a target id")
            .to_owned();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
        };
        let mobile = width < 600;
        let metrics =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call(Some(&page), "Emulation.setDeviceMetricsOverride", metrics);
        self.call(Some(&page), "Page.enable", json!({}));
        self.call(Some(&page), "Page.navigate", json!({"url": url}));
        page
    }

    /// Evaluates `expression` in the page; returns its value.
    fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self.call(
            Some(page),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(thrown) = result.get("exceptionDetails") {
            return json!({ "exception": thrown });
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression`, waits for the promise it returns, and returns
    /// what it resolves to.
    fn eval_async(&mut self, page: &Page, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call(Some(page), "Runtime.evaluate", params);
        if let Some(thrown) = result.get("exceptionDetails") {
            panic!("{expression} threw: {thrown}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `want` holds; panics after 15 s with
    /// the last value and the page's status line.
    fn wait_until(
        &mut self,
        page: &Page,
        what: &str,
        expression: &str,
        want: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + secs(15);
        loop {
            let value = self.eval(page, expression);
            if want(&value) {
                return;
            }
            if Instant::now() >= deadline {
                let status = self.eval(page, "document.querySelector('#status')?.textContent");
                let body = self.eval(
                    page,
                    "document.body ? document.body.innerText.slice(0, 2000) : ''",
                );
                panic!("{what}: not within 15 s; last value {value}; status {status}; page text: {body}");
            }
            std::thread::sleep(Duration::from_millis(50)); // polling the page's DOM, with a deadline
        }
    }

    /// Writes a PNG of the page to `path`.
    fn screenshot(&mut self, page: &Page, path: &Path) {
        let shot = self.call(
            Some(page),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        let png = base64_decode(shot["data"].as_str().expect("base64 image data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("create target/");
        std::fs::write(path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

/// Standard base64 (what DevTools sends), without a dependency for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for group in bytes.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        let produced = group.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + produced]);
    }
    out
}

#[test]
fn base64_decodes_what_devtools_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
