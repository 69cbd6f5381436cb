//! The queue's count and its drop rule, on the queue alone.

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
