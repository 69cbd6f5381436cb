//! This node's life in presence, on the command thread: its beat every
//! tick, with the reaping of nodes that stopped beating, and its goodbye
//! when it stops cleanly. Both run one script (`scripts::HEARTBEAT`), the
//! goodbye in `bye` mode, which reaps this node itself.

use std::time::{Duration, Instant};

use ::redis::RedisResult;
use log::{debug, warn};

use super::{Commands, DEAD_AFTER};
use crate::engine::redis::wire;
use crate::protocol::now_millis;

impl Commands {
    /// Every `tick`: this node's beat, and the reaping of dead nodes. A
    /// failure is only logged: the next batch finds the connection broken,
    /// and the relay says Redis is down.
    pub(super) fn heartbeat(&mut self, tick: Duration) {
        if self.beat.is_some_and(|at| at.elapsed() < tick) {
            return;
        }
        self.beat = Some(Instant::now());
        let now = now_millis();
        let dead_before = now
            .saturating_sub((self.settings.heartbeat.as_secs_f64() * DEAD_AFTER * 1000.0) as u64);
        match self.heartbeat_script(now, dead_before, "") {
            None | Some(Ok(0)) => {}
            Some(Ok(n)) => log::info!("redis: {n} members of nodes without a heartbeat left"),
            Some(Err(e)) => {
                debug!("redis: heartbeat: {e}");
                self.con = None;
            }
        }
    }

    /// This node stops cleanly: its members leave presence on every node
    /// now, each with a `left` to the other nodes' members, rather than when
    /// the others reap it a few heartbeats later. Skipped while Redis is
    /// down: then the others reap it as a node that died.
    pub(super) fn goodbye(&mut self) {
        let up = self.metrics.redis().is_some_and(|r| r.is_up());
        if !up {
            return;
        }
        match self.heartbeat_script(now_millis(), 0, "bye") {
            None => return,
            Some(Ok(n)) => log::info!("redis: stopping: this node's {n} members left presence"),
            Some(Err(e)) => {
                warn!("redis: stopping: presence not cleared ({e}); the other nodes will reap it")
            }
        }
        self.mine.clear();
    }

    /// Runs the heartbeat script for this node (`mode` "" to beat and reap
    /// nodes silent since `dead_before`, "bye" to leave); `None` when there
    /// is no connection to run it on.
    fn heartbeat_script(
        &mut self,
        now: u64,
        dead_before: u64,
        mode: &str,
    ) -> Option<RedisResult<i64>> {
        let sha = self.connected().ok()?.heartbeat.clone();
        let result = ::redis::cmd("EVALSHA")
            .arg(sha)
            .arg(3)
            .arg(wire::nodes_key())
            .arg(wire::presence_rooms_key())
            .arg(wire::counter_key())
            .arg(&self.settings.instance)
            .arg(now)
            .arg(dead_before)
            .arg(wire::events_channel())
            .arg(self.settings.history)
            .arg(self.settings.expiry_ms)
            .arg(mode)
            .query(&mut self.con.as_mut().expect("connected").con);
        Some(result)
    }
}
