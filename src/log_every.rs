//! A warning that a flood could repeat for every request (each room refused
//! at `--max-rooms`, each publish turned away with the Redis job queue
//! full), said at most once a period: the rest go to `debug!`, and a metric
//! counts every one. The caller logs, so the line keeps its module's target.

use std::time::{Duration, Instant};

/// When a warning was last said, and how often it may be.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    last: Option<Instant>,
}

impl LogEvery {
    /// At most once every `every`.
    pub const fn new(every: Duration) -> LogEvery {
        LogEvery { every, last: None }
    }

    /// Whether a warning is due now; if so, it counts as said.
    pub fn due(&mut self) -> bool {
        if self.last.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        self.last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_due_and_the_next_only_after_the_period() {
        let mut warning = LogEvery::new(Duration::from_secs(60));
        assert!(warning.due());
        assert!(!warning.due());
        let mut often = LogEvery::new(Duration::ZERO);
        assert!(often.due());
        assert!(often.due());
    }
}
