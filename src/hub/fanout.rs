//! Fan-out: a round's events for one room go to each member as one *run* —
//! one write through to its socket, or one queue slot and at most one writer
//! wake-up, however many events — and `Queue::offer` is the only door into a
//! member's queue (`crate::queue`): what it refuses, the hub drops.

use std::sync::Arc;

use crate::protocol::{ClientId, Event};
use crate::queue::{Offered, Outbound, Run};
use crate::room::RoomName;

use super::Hub;

/// Room reserved for a run's events: 160 pointers are 1280 bytes, above the
/// largest block glibc keeps in a thread's cache of freed blocks (1032). The
/// run is freed by the last writer to drop it, on that writer's thread, where
/// a cached block would stay for good (see `transport::ws::write_frames`).
pub(super) const RUN_ROOM: usize = 160;

/// The most events in one run (fewer with a small `--send-buffer`: a run must
/// fit in a queue that is already three-quarters full).
pub(super) const MAX_RUN_EVENTS: usize = 64;

const _: () = assert!(RUN_ROOM * size_of::<Arc<Event>>() > 1032 && RUN_ROOM >= MAX_RUN_EVENTS);

/// The run being filled: which room's, and its number.
pub(super) struct OpenRun {
    pub(super) room: RoomName,
    pub(super) number: u64,
}

impl Hub {
    /// Adds a sequenced event to the room's run; the run goes to the members
    /// when the round ends (`flush_run`). A run holds one room's events, so
    /// that a member of several rooms still gets every event in id order.
    pub(super) fn add_to_run(&mut self, room: &RoomName, event: Arc<Event>) {
        let same_room = self.open_run.as_ref().is_some_and(|run| &run.room == room);
        if !same_room || self.run_events.len() >= self.max_run {
            self.flush_run();
        }
        if self.open_run.is_none() {
            self.runs += 1;
            self.open_run = Some(OpenRun {
                room: room.clone(),
                number: self.runs,
            });
        }
        if self.run_events.capacity() == 0 {
            self.run_events.reserve_exact(RUN_ROOM);
        }
        self.run_events.push(event);
    }

    /// The fan-out: `try_send` the open run to every member of its room, one
    /// queue item each. Never `send`: a blocking send would let one slow
    /// reader stall every room. Members that fail are noted in `leaving`.
    pub(super) fn flush_run(&mut self) {
        let Some(OpenRun { room, number }) = self.open_run.take() else {
            return;
        };
        let Some(target) = self.rooms.get(&room) else {
            self.run_events.clear(); // everyone left
            return;
        };
        let run = Arc::new(Run(std::mem::take(&mut self.run_events)));
        let (mut delivered, mut through) = (0, 0);
        for member in &target.members {
            let Some(item) = Run::part_from(&run, member.joined_at.start_in(number)) else {
                continue; // joined after the run's last event was added
            };
            let count = item.counted();
            match member.queue.offer(item) {
                Ok(Offered::Queued) => delivered += count as u64,
                Ok(Offered::WrittenThrough) => {
                    delivered += count as u64;
                    through += count as u64;
                }
                Err(why) => self.leaving.push((member.client, why.into())),
            }
        }
        self.metrics.delivered(delivered, through);
        self.housekeeping.delivered(delivered);
        // A run nobody shares (one event goes out as a plain event) gives its
        // buffer back for the next.
        if let Some(Run(mut events)) = Arc::into_inner(run) {
            events.clear();
            self.run_events = events;
        }
    }

    /// Sends an answer to one client; a full queue drops it like fan-out does.
    pub(super) fn tell(&mut self, id: ClientId, event: Event) {
        self.flush_run(); // what the round published comes first
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let answer = Outbound::Event(Arc::new(event));
        if let Err(why) = client.queue.offer(answer) {
            self.leaving.push((id, why.into()));
        }
    }
}
