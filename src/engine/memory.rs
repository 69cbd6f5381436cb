//! The default engine: ids from a counter, history in this process.
//!
//! Runs on the hub thread, inside each call, and always answers `Now`: the
//! hub publishes, fans out and replays exactly as it did before there was an
//! engine. The history itself sits in the hub's table of rooms, lent to each
//! call (`Rooms`, within `--history`, `--max-history-bytes` and
//! `--room-expiry`; the module doc of `engine` says why it lives there).

use std::sync::Arc;

use crossbeam_channel::{never, Receiver};

use crate::metrics::Metrics;
use crate::rooms::Rooms;

use super::{merge, Answer, Draft, Engine, Read, Reading, Sequenced, Ticket};

/// Ids from a counter, history in the hub's rooms.
pub struct MemoryEngine {
    /// The id of the last event sequenced; ids start at 1.
    last_id: u64,
    /// Counts the events that `--max-history-bytes` evicts.
    metrics: Arc<Metrics>,
}

impl MemoryEngine {
    /// No events yet.
    pub fn new(metrics: Arc<Metrics>) -> MemoryEngine {
        MemoryEngine {
            last_id: 0,
            metrics,
        }
    }
}

impl Engine for MemoryEngine {
    fn sequence(&mut self, local: &mut Rooms, _ticket: Ticket, draft: Draft) -> Sequenced {
        let room = draft.room.clone();
        let last_id = &mut self.last_id;
        // The id is spent inside `record`, only once the room is known to exist.
        let make = || {
            *last_id += 1;
            Arc::new(draft.into_event(*last_id))
        };
        let Some((event, evicted)) = local.record(&room, make) else {
            return Sequenced::Refused; // the room is gone (everyone left)
        };
        if evicted > 0 {
            self.metrics.history_evicted(evicted);
        }
        Sequenced::Now(event)
    }

    fn history(&mut self, local: &Rooms, _ticket: Ticket, read: Read) -> Reading {
        let Read {
            rooms,
            since,
            limit,
        } = read;
        let kept = rooms.iter().filter_map(|name| local.get(name));
        let events = match since {
            Some(since) => kept
                .flat_map(|r| r.since(since).take(limit).cloned())
                .collect(),
            None => kept.flat_map(|r| r.newest(limit).cloned()).collect(),
        };
        Reading::Now(merge(events, since, limit))
    }

    fn answers(&self) -> Receiver<Answer> {
        never()
    }
}
