//! What each subscriber saw during a trial: which messages arrived, in what
//! order, how late.
//!
//! Every subscriber keeps, per publisher, a bitset of the sequence numbers it has
//! received and the next number it expects. From those three counts follow
//! without any cross-subscriber coordination: a number seen twice is a
//! duplicate, a number below the expected one arriving for the first time is out
//! of order, and numbers never seen by the end of the drain are lost. Latencies
//! go into HDR histograms shared by a shard of subscribers (one histogram per
//! subscriber would cost hundreds of megabytes at ten thousand subscribers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;

use crate::token::{self, Marker};

/// Latencies are recorded in microseconds up to this bound (larger values are
/// clamped to it).
const MAX_LATENCY_US: u64 = 120_000_000;
/// Subscribers per histogram shard are `index % HISTOGRAM_SHARDS`.
const HISTOGRAM_SHARDS: usize = 16;
/// Sequence numbers above this are treated as garbage rather than grown into.
const MAX_SEQ: u64 = 1 << 28;

/// Locks a mutex, carrying on with the data if a panicking thread poisoned it
/// (the counters stay meaningful).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new latency histogram (µs, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// One run of the publishers, shared by every subscriber while it lasts.
pub struct Trial {
    /// Carried in every marker of this trial.
    pub id: u32,
    /// Number of publishers (valid marker publisher indices are below it).
    pub publishers: usize,
    /// Messages scheduled before this are warm-up: counted for loss, not
    /// timed.
    pub measure_from_us: u64,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Trial {
    /// A trial with empty histograms.
    pub fn new(id: u32, publishers: usize, measure_from_us: u64) -> Self {
        Trial {
            id,
            publishers,
            measure_from_us,
            histograms: (0..HISTOGRAM_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// All shards merged.
    pub fn merged_histogram(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.histograms {
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&*lock(shard));
        }
        all
    }
}

/// Per-subscriber counters for one trial.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Distinct messages of the current trial received.
    pub unique: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages that arrived after a later message of the same publisher.
    pub out_of_order: u64,
    /// Distinct messages scheduled after the warm-up (the timed ones).
    pub measured: u64,
    /// Markers of another trial (late deliveries from a previous one).
    pub stale: u64,
    /// Marker prefixes that did not parse or named an unknown publisher.
    pub malformed: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.measured += other.measured;
        self.stale += other.stale;
        self.malformed += other.malformed;
    }
}

#[derive(Default)]
struct SeqTrack {
    seen: Vec<u64>,
    next_expected: u64,
}

/// The mutable part of a subscriber, locked once per read batch by its reader
/// task and now and then by the controller.
#[derive(Default)]
pub struct SubState {
    trial: Option<Arc<Trial>>,
    tracks: Vec<SeqTrack>,
    counts: Counts,
    /// How the connection ended, once it has.
    pub ending: Option<String>,
}

impl SubState {
    /// Starts counting for `trial`, forgetting the previous one.
    pub fn begin(&mut self, trial: Arc<Trial>) {
        self.tracks = (0..trial.publishers).map(|_| SeqTrack::default()).collect();
        self.counts = Counts::default();
        self.trial = Some(trial);
    }

    /// Stops counting and returns what the trial saw.
    pub fn finish(&mut self) -> Counts {
        self.trial = None;
        self.tracks = Vec::new();
        std::mem::take(&mut self.counts)
    }

    /// Counts so far in the current trial.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The current trial, if any.
    pub fn trial(&self) -> Option<Arc<Trial>> {
        self.trial.clone()
    }

    /// Scans one received payload for markers, received at `now_us`.
    pub fn on_payload(&mut self, payload: &[u8], now_us: u64, hist: Option<&mut Histogram<u64>>) {
        let mut hist = hist;
        let malformed = token::scan(payload, |marker| {
            self.on_marker(marker, now_us, hist.as_deref_mut())
        });
        self.counts.malformed += malformed;
    }

    fn on_marker(&mut self, m: Marker, now_us: u64, hist: Option<&mut Histogram<u64>>) {
        let Some(trial) = &self.trial else {
            self.counts.stale += 1;
            return;
        };
        if m.trial != trial.id {
            self.counts.stale += 1;
            return;
        }
        let measure_from_us = trial.measure_from_us;
        let Some(track) = usize::try_from(m.publisher)
            .ok()
            .and_then(|p| self.tracks.get_mut(p))
        else {
            self.counts.malformed += 1;
            return;
        };
        if m.seq >= MAX_SEQ {
            self.counts.malformed += 1;
            return;
        }
        let word = (m.seq / 64) as usize;
        let bit = 1u64 << (m.seq % 64);
        if word >= track.seen.len() {
            track.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if track.seen[word] & bit != 0 {
            self.counts.duplicates += 1;
            return;
        }
        track.seen[word] |= bit;
        self.counts.unique += 1;
        if m.seq < track.next_expected {
            self.counts.out_of_order += 1;
        } else {
            track.next_expected = m.seq + 1;
        }
        if m.scheduled_us >= measure_from_us {
            self.counts.measured += 1;
            if let Some(h) = hist {
                h.saturating_record(now_us.saturating_sub(m.scheduled_us));
            }
        }
    }
}

/// One subscriber connection as the controller sees it.
pub struct SubShared {
    /// Position in the pool (chooses the histogram shard).
    pub index: usize,
    /// Bytes received so far (for the quiet barrier).
    pub bytes: AtomicU64,
    /// False once the connection has ended.
    pub alive: AtomicBool,
    /// Counters, locked per read batch.
    pub state: Mutex<SubState>,
}

impl SubShared {
    /// A live subscriber with nothing received yet.
    pub fn new(index: usize) -> Self {
        SubShared {
            index,
            bytes: AtomicU64::new(0),
            alive: AtomicBool::new(true),
            state: Mutex::new(SubState::default()),
        }
    }

    /// Scans a batch of payloads (as produced by `each`) under one lock.
    pub fn on_batch(&self, each: impl FnOnce(&mut dyn FnMut(&[u8]))) {
        let now = token::now_us();
        let mut state = lock(&self.state);
        let trial = state.trial();
        let mut hist = trial
            .as_ref()
            .map(|t| lock(&t.histograms[self.index % HISTOGRAM_SHARDS]));
        each(&mut |payload| state.on_payload(payload, now, hist.as_deref_mut()));
    }

    /// Marks the connection as ended for `why`.
    pub fn ended(&self, why: String) {
        self.alive.store(false, Ordering::Release);
        lock(&self.state).ending = Some(why);
    }

    /// Whether the connection is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(trial: u32, publisher: u32, seq: u64, scheduled_us: u64) -> Vec<u8> {
        let mut out = Vec::new();
        token::encode(
            &mut out,
            &Marker {
                trial,
                publisher,
                seq,
                scheduled_us,
            },
            0,
        );
        out
    }

    #[test]
    fn counts_duplicates_reordering_staleness_and_warmup() {
        let trial = Arc::new(Trial::new(2, 2, 100));
        let mut state = SubState::default();
        state.begin(trial.clone());
        let mut hist = new_histogram();
        for (t, p, seq, sched) in [
            (2, 0, 0, 50),
            (2, 0, 2, 150),
            (2, 0, 1, 150),
            (2, 0, 2, 150),
            (1, 0, 3, 150),
            (2, 5, 0, 150),
            (2, 1, 0, 200),
        ] {
            state.on_payload(&payload(t, p, seq, sched), 300, Some(&mut hist));
        }
        let c = state.finish();
        assert_eq!(c.unique, 4);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.out_of_order, 1);
        assert_eq!(c.stale, 1);
        assert_eq!(c.malformed, 1);
        assert_eq!(c.measured, 3, "the message scheduled at 50 is warm-up");
        assert_eq!(hist.len(), 3);
        assert_eq!(hist.max(), 150);
    }
}
