//! The queue's count and its drop rule, on the queue alone, and the hub's
//! writes through to a real socket.

use std::io::Write;

use super::*;
use crate::protocol::Event;

fn event() -> Outbound {
    Outbound::Event(Arc::new(Event::error("test", "an event")))
}

fn run_of(events: usize) -> Outbound {
    let run = (0..events)
        .map(|_| Arc::new(Event::error("test", "an event")))
        .collect();
    Outbound::Run(Arc::new(Run(run)), 0)
}

#[test]
fn the_count_is_of_events_and_opening_an_item_counts_it_out() {
    let (queue, inbox) = bounded(8, OnSlow::Nothing);
    queue.offer(run_of(3)).expect("fits");
    queue.offer(event()).expect("fits");
    assert_eq!((queue.queued(), inbox.queued()), (4, 4));
    let item = inbox.try_recv().expect("an item");
    assert_eq!(item.events().len(), 3);
    assert_eq!(inbox.queued(), 1);
    let Ok(queued) = inbox.channel().try_recv() else {
        panic!("an item")
    };
    assert_eq!(inbox.queued(), 1, "counted out only once opened");
    inbox.open(queued);
    assert_eq!(inbox.queued(), 0);
}

#[test]
fn a_consumer_that_does_not_report_its_writes_is_slow_at_the_bound() {
    let (queue, inbox) = bounded(4, OnSlow::Nothing);
    for _ in 0..4 {
        queue.offer(event()).expect("fits");
    }
    assert_eq!(queue.offer(event()), Err(NotQueued::Slow));
    assert_eq!(inbox.queued(), 4, "a refused item is not counted");
}

#[test]
fn a_writer_that_has_not_run_yet_is_not_slow_until_the_ceiling() {
    let (queue, inbox) = bounded(4, OnSlow::Nothing);
    inbox.writer_is_current_thread();
    for n in 0..4 * CEILING_FACTOR {
        queue
            .offer(event())
            .unwrap_or_else(|e| panic!("event {n}: {e:?}"));
    }
    assert_eq!(queue.offer(event()), Err(NotQueued::Ceiling));
    assert_eq!(inbox.queued(), 4 * CEILING_FACTOR);
}

#[test]
fn a_full_queue_whose_writer_is_stuck_in_one_write_is_slow() {
    let (queue, inbox) = bounded(4, OnSlow::Nothing);
    inbox.writer_is_current_thread();
    for _ in 0..4 {
        queue.offer(event()).expect("fits");
    }
    let writing = inbox.writing();
    queue
        .offer(event())
        .expect("a write just begun is not stuck");
    let started = Instant::now();
    while started.elapsed() < STUCK_WRITE {
        std::thread::sleep(STUCK_WRITE / 4);
    }
    assert_eq!(queue.offer(event()), Err(NotQueued::Slow));
    // A write that ended is not stuck, however long it took.
    drop(writing);
    queue.offer(event()).expect("the writer is back");
}

#[test]
fn a_queue_whose_writer_is_gone_refuses_and_counts_nothing() {
    let (queue, inbox) = bounded(4, OnSlow::Nothing);
    drop(inbox);
    assert_eq!(queue.offer(event()), Err(NotQueued::Gone));
    assert_eq!(queue.queued(), 0);
}

/// A queue the hub writes through, on a real socket, with the peer's end.
fn through_pair(bound: usize) -> (Queue, Inbox, TcpStream, Arc<TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let socket =
        Arc::new(TcpStream::connect(listener.local_addr().expect("addr")).expect("connect"));
    let (peer, _) = listener.accept().expect("accept");
    let through = Through::websocket(Arc::clone(&socket), crate::protocol::Format::Json);
    let (queue, inbox) = writing_through(bound, OnSlow::Nothing, through);
    inbox.writer_is_current_thread();
    (queue, inbox, peer, socket)
}

fn said(text: &str) -> Arc<Event> {
    Arc::new(Event::error("test", text))
}

/// Reads `len` bytes from the peer.
fn read_bytes(peer: &mut TcpStream, len: usize) -> Vec<u8> {
    use std::io::Read;
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = vec![0; len];
    peer.read_exact(&mut got).expect("the bytes come");
    got
}

#[test]
fn the_hub_writes_through_to_a_socket_with_room_and_queues_nothing() {
    let (queue, inbox, mut peer, _socket) = through_pair(8);
    let event = said("straight to the socket");
    queue
        .offer(Outbound::Event(Arc::clone(&event)))
        .expect("written");
    assert!(inbox.is_empty(), "nothing queued, no writer woken");
    assert_eq!(queue.queued(), 0);
    let frame = event.ws_frame(crate::protocol::Format::Json);
    assert_eq!(read_bytes(&mut peer, frame.len()), frame[..]);
}

#[test]
fn while_its_writer_writes_or_something_is_queued_the_hub_queues() {
    let (queue, inbox, _peer, _socket) = through_pair(8);
    let held = inbox.hold().expect("a through queue has a write lock");
    queue.offer(event()).expect("queued");
    drop(held);
    assert_eq!(inbox.queued(), 1, "the writer was writing: queued");
    queue.offer(event()).expect("queued");
    assert_eq!(inbox.queued(), 2, "behind what is queued, never ahead");
}

#[test]
fn a_write_through_that_stops_part_way_queues_the_rest_first() {
    let (queue, inbox, mut peer, socket) = through_pair(1 << 20);
    // The peer does not read yet: fill its buffers until one write through
    // is cut short.
    let big: String = "x".repeat(60_000);
    let mut events = Vec::new();
    while inbox.is_empty() {
        let event = said(&big);
        queue
            .offer(Outbound::Event(Arc::clone(&event)))
            .expect("taken");
        events.push(event);
        assert!(events.len() < 10_000, "a socket without end");
    }
    let after = said("after the cut");
    queue
        .offer(Outbound::Event(Arc::clone(&after)))
        .expect("queued");
    events.push(after);
    // The writer's part, as `transport::ws::writer` does it: the queue under
    // the lock, `Unfinished` bytes first, all written in order.
    let reader = {
        let events = events.clone();
        std::thread::spawn(move || {
            let frames: Vec<u8> = events
                .iter()
                .flat_map(|e| e.ws_frame(crate::protocol::Format::Json).to_vec())
                .collect();
            assert_eq!(
                read_bytes(&mut peer, frames.len()),
                frames,
                "every byte, in order"
            );
        })
    };
    let _held = inbox.hold().expect("a write lock");
    let first = inbox.try_recv().expect("the rest of the cut write");
    let Outbound::Unfinished(rest) = first else {
        panic!("the rest comes first, not {first:?}");
    };
    (&*socket).write_all(&rest.bytes).expect("written");
    while let Ok(item) = inbox.try_recv() {
        for event in item.events() {
            (&*socket)
                .write_all(event.ws_frame(crate::protocol::Format::Json))
                .expect("written");
        }
    }
    reader.join().expect("the peer got it all");
}

#[test]
fn an_sse_stream_gets_each_write_through_as_one_http_chunk() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let socket =
        Arc::new(TcpStream::connect(listener.local_addr().expect("addr")).expect("connect"));
    let (mut peer, _) = listener.accept().expect("accept");
    let through = Through::sse(Arc::clone(&socket), true);
    let (queue, inbox) = writing_through(8, OnSlow::Nothing, through);
    inbox.writer_is_current_thread();
    let events = vec![said("one"), said("two")];
    let run = Outbound::Run(Arc::new(Run(events.clone())), 0);
    assert_eq!(queue.offer(run), Ok(Offered::WrittenThrough));
    let blocks: Vec<u8> = events.iter().flat_map(|e| e.sse_block().to_vec()).collect();
    let mut want = format!("{:x}\r\n", blocks.len()).into_bytes();
    want.extend_from_slice(&blocks);
    want.extend_from_slice(b"\r\n");
    assert_eq!(read_bytes(&mut peer, want.len()), want);
}
