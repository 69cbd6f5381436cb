//! Lesson 0: the Go hub switchboard follows, ported line for line.
//!
//! gorilla/websocket's chat example (`examples/chat/hub.go` and `client.go`)
//! is where switchboard starts: one hub owns the set of clients, and every
//! other goroutine talks to it over three channels (register, unregister,
//! broadcast). Each client has a queue of 256 messages; when one is full the
//! hub does not wait, it closes that queue (`select … default`). Here it is
//! with crossbeam channels and threads, each part under the Go it mirrors.
//! Sockets are channels to `main`, which plays three browsers: alice types,
//! bob reads, sleepy never reads, so its writer blocks, its queue fills, and
//! the hub drops it while the others go on.
//!
//!     cargo run --example 00_go_hub
//!
//! In switchboard the same hub is `src/hub/` (`Hub::run` in `mod.rs`,
//! fan-out in `fanout.rs`, `remove_client` in `members.rs`), the queue and
//! its `select … default` are `src/queue/` (`Queue::offer`), and the pumps
//! are the reader and writer threads of `src/transport/ws/`. What it changes: one `Command` channel instead of
//! three, rooms, ids and history, a dropped client told why (close 1008),
//! and a hub that ends when nothing can reach it.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};

/// Go's `[]byte`: one message shared by every queue it is put in.
type Message = Arc<str>;

/// What reaches a browser: Go's `websocket.TextMessage` or `CloseMessage`.
enum Frame {
    Text(String),
    Close,
}

/// `type Client struct { hub *Hub; conn *websocket.Conn; send chan []byte }`.
/// Go's one `chan` is two ends here: the hub keeps the sender (only it
/// closes the queue), the client's writer the receiver.
struct Client {
    name: &'static str, // Go keys its map by the *Client pointer
    send: Sender<Message>,
}

/// `c.hub`: the ends of the hub's channels that clients send on.
#[derive(Clone)]
struct HubHandle {
    register: Sender<Client>,
    unregister: Sender<&'static str>,
    broadcast: Sender<Message>,
}

/// `type Hub struct { clients map[*Client]bool; broadcast, register, unregister chan … }`
struct Hub {
    clients: HashMap<&'static str, Sender<Message>>,
    broadcast: Receiver<Message>,
    register: Receiver<Client>,
    unregister: Receiver<&'static str>,
}

impl Hub {
    /// `func newHub() *Hub` and `go hub.run()`. Go's channels are unbuffered:
    /// `bounded(0)`, a hand-over, so a sender waits until the hub takes it.
    fn start() -> (HubHandle, JoinHandle<()>) {
        let (broadcast, broadcasts) = bounded(0);
        let (register, registers) = bounded(0);
        let (unregister, unregisters) = bounded(0);
        let hub = Hub {
            clients: HashMap::new(),
            broadcast: broadcasts,
            register: registers,
            unregister: unregisters,
        };
        let thread = spawn("hub", move || hub.run());
        let handle = HubHandle {
            register,
            unregister,
            broadcast,
        };
        (handle, thread)
    }

    /// `func (h *Hub) run()`: `for { select { … } }`. Go's hub runs until the
    /// process exits; this one returns once no client can reach it.
    fn run(mut self) {
        loop {
            select! {
                // case client := <-h.register: h.clients[client] = true
                recv(self.register) -> client => match client {
                    Ok(client) => {
                        self.clients.insert(client.name, client.send);
                    }
                    Err(_) => return,
                },
                // case client := <-h.unregister: if _, ok := h.clients[client]; ok {
                //     delete(h.clients, client); close(client.send) }
                // The check matters: a client the hub dropped as slow unregisters later.
                recv(self.unregister) -> name => match name {
                    Ok(name) => drop(self.clients.remove(name)), // dropping the sender closes
                    Err(_) => return,
                },
                // case message := <-h.broadcast: for client := range h.clients {
                //     select { case client.send <- message: default: close(client.send); delete(h.clients, client) } }
                recv(self.broadcast) -> message => match message {
                    // try_send is Go's `select … default`: never wait for one reader.
                    // Returning false drops the sender: that is close(client.send).
                    Ok(message) => self.clients.retain(|name, send| {
                        match send.try_send(Arc::clone(&message)) {
                            Ok(()) => true,
                            Err(TrySendError::Full(_)) => {
                                println!("hub: {name}'s queue is full at {message:?}: closed");
                                false
                            }
                            Err(TrySendError::Disconnected(_)) => false, // not in Go: its writer ended
                        }
                    }),
                    Err(_) => return,
                },
            }
        }
    }
}

/// `func serveWs(hub *Hub, …)`, after the upgrade: `client := &Client{…,
/// send: make(chan []byte, 256)}`, `client.hub.register <- client`, then
/// `go client.writePump()` and `go client.readPump()`.
fn serve_ws(hub: &HubHandle, name: &'static str, typed: Receiver<String>, screen: Sender<Frame>) {
    let (send, queue) = bounded(256);
    let client = Client { name, send };
    hub.register
        .send(client)
        .expect("the hub runs while main holds a handle");
    spawn(&format!("ws-w {name}"), move || write_pump(queue, screen));
    let hub = hub.clone();
    spawn(&format!("ws-r {name}"), move || read_pump(name, hub, typed));
}

/// `func (c *Client) readPump()`: every message read goes to the hub.
fn read_pump(name: &'static str, hub: HubHandle, typed: Receiver<String>) {
    // for { _, message, err := c.conn.ReadMessage(); if err != nil { break } …
    for message in typed {
        // message = bytes.TrimSpace(bytes.Replace(message, newline, space, -1))
        let message = message.replace('\n', " ").trim().to_owned();
        // c.hub.broadcast <- message
        if hub.broadcast.send(message.into()).is_err() {
            break;
        }
    }
    // defer func() { c.hub.unregister <- c; c.conn.Close() }()
    let _ = hub.unregister.send(name); // the hub may have ended already
}

/// `func (c *Client) writePump()`, without the ping ticker.
fn write_pump(queue: Receiver<Message>, screen: Sender<Frame>) {
    // case message, ok := <-c.send:
    while let Ok(message) = queue.recv() {
        // w.Write(message); n := len(c.send); for i := 0; i < n; i++ {
        //     w.Write(newline); w.Write(<-c.send) }
        let mut frame = message.to_string();
        let n = queue.len();
        for message in queue.try_iter().take(n) {
            frame.push('\n');
            frame.push_str(&message);
        }
        // if err := w.Close(); err != nil { return }: a blocked socket blocks here
        if screen.send(Frame::Text(frame)).is_err() {
            return;
        }
    }
    // if !ok { // The hub closed the channel.
    //     c.conn.WriteMessage(websocket.CloseMessage, []byte{}); return }
    let _ = screen.send(Frame::Close);
}

/// Go's `go` statement, with a name for `top -H`.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    let builder = thread::Builder::new().name(name.to_owned());
    builder.spawn(body).expect("a thread starts")
}

/// One browser: what it types, and its screen (a hand-over, like a socket
/// whose buffers are full: the writer waits until the browser reads).
struct Browser {
    keyboard: Sender<String>,
    screen: Receiver<Frame>,
}

fn connect(hub: &HubHandle, name: &'static str) -> Browser {
    let (keyboard, typed) = bounded(0);
    let (to_screen, screen) = bounded(0);
    serve_ws(hub, name, typed, to_screen);
    Browser { keyboard, screen }
}

fn main() {
    let (hub, hub_thread) = Hub::start();
    let [alice, bob, sleepy] = ["alice", "bob", "sleepy"].map(|name| connect(&hub, name));
    drop(hub); // from now on only the clients' pumps can reach the hub

    let wait = Duration::from_secs(5);
    for n in 1..=300 {
        let typed = format!("message {n}");
        alice
            .keyboard
            .send(typed.clone())
            .expect("alice's reader runs");
        // Wait for the condition (both screens show it), never on the clock.
        for browser in [&alice, &bob] {
            match browser.screen.recv_timeout(wait) {
                Ok(Frame::Text(text)) if text == typed => {}
                _ => panic!("expected {typed:?} on every awake screen"),
            }
        }
    }
    println!("alice typed 300 messages; alice and bob saw each one");

    // Sleepy wakes up: first what its writer held when the socket blocked
    // (one frame, a few messages at most), then the 256 its queue held.
    let (mut frames, mut lines) = (0, 0);
    let closed = "sleepy's writer ends with a close frame";
    while let Frame::Text(text) = sleepy.screen.recv_timeout(wait).expect(closed) {
        (frames, lines) = (frames + 1, lines + text.lines().count());
    }
    println!("sleepy reads at last: {lines} messages in {frames} frames, then the close frame");

    for browser in [alice, bob, sleepy] {
        drop(browser.keyboard); // the browser closes: its reader unregisters
        for _frame in browser.screen.iter() {} // a Close frame, then the writer ends
    }
    hub_thread
        .join()
        .expect("the hub ends once every client has gone");
    println!("every client left; the hub ended: nothing could reach it any more");
}
