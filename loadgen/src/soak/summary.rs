//! The soak's table: what ran, what arrived, how the server's resources
//! went, and the verdict.

use std::time::Duration;

use crate::attack::AttackReport;
use crate::churn::ChurnReport;
use crate::fanout::PublisherReport;
use crate::sample::Growth;
use crate::track::Counts;

/// Everything the table shows.
pub struct Summary<'a> {
    pub duration: Duration,
    pub warmup_s: f64,
    pub seed: u64,
    pub ws_subs: usize,
    pub sse_subs: usize,
    pub reports: &'a [PublisherReport],
    pub sent: u64,
    pub counts: Counts,
    pub lost: u64,
    pub disconnected: usize,
    pub latency: &'a hdrhistogram::Histogram<u64>,
    pub churned: &'a ChurnReport,
    pub attacks: &'a AttackReport,
    pub healthz: Option<u16>,
    pub growth: &'a [Growth],
    pub failures: &'a [String],
}

pub fn print(s: &Summary<'_>) {
    let subs = (s.ws_subs + s.sse_subs) as u64;
    let c = s.churned;
    let rows = vec![
        (
            "duration".to_string(),
            format!(
                "{:.0} s (growth judged after {:.0} s), seed {:#x}",
                s.duration.as_secs_f64(),
                s.warmup_s,
                s.seed
            ),
        ),
        (
            "healthy subscribers".into(),
            format!("{} WebSocket + {} SSE in room soak", s.ws_subs, s.sse_subs),
        ),
        (
            "published".into(),
            format!(
                "WebSocket {}, REST {}, gRPC {} ({} in all)",
                s.reports.first().map_or(0, |r| r.sent),
                s.reports.get(1).map_or(0, |r| r.sent),
                s.reports
                    .get(2)
                    .map_or("off".to_string(), |r| r.sent.to_string()),
                s.sent
            ),
        ),
        (
            "delivered".into(),
            format!(
                "{} of {}; lost {}, duplicated {}, out of order {}, disconnected {}",
                s.counts.unique,
                s.sent * subs,
                s.lost,
                s.counts.duplicates,
                s.counts.out_of_order,
                s.disconnected
            ),
        ),
        (
            "latency p50/p99/max".into(),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                s.latency.value_at_quantile(0.5) as f64 / 1000.0,
                s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                s.latency.max() as f64 / 1000.0
            ),
        ),
        (
            "churn".into(),
            format!("{:?}, failures {:?}", c.churned, c.churn_failures),
        ),
        (
            "slow readers".into(),
            format!(
                "started {:?}: closed {:?}, never dropped {:?}, dropped but left open {:?}",
                c.slow_started, c.slow_closed, c.slow_kept, c.slow_left_open
            ),
        ),
        (
            "other rooms".into(),
            format!(
                "{} rotating-room + {} bulk publishes; {} refused",
                c.rooms_published, c.bulk_published, c.rooms_refused
            ),
        ),
        (
            "bad input".into(),
            format!(
                "{:?}; {} closed by the server, {} could not connect",
                s.attacks.sent, s.attacks.closed_by_server, s.attacks.connect_failures
            ),
        ),
        ("/healthz at the end".into(), format!("{:?}", s.healthz)),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    eprintln!("== soak");
    for (k, v) in &rows {
        eprintln!("  {k:<width$}  {v}");
    }
    eprintln!();
    eprintln!(
        "  {:<8} {:>10} {:>16} {:>15} {:>10} {:>10}  verdict",
        "resource", "min", "first third max", "last third max", "limit", "max"
    );
    for g in s.growth {
        eprintln!(
            "  {:<8} {:>10} {:>16} {:>15} {:>10} {:>10}  {}",
            g.name,
            g.min,
            g.first,
            g.last,
            g.limit,
            g.max,
            if g.passed { "ok" } else { "GROWS" }
        );
    }
    eprintln!();
    if s.failures.is_empty() {
        eprintln!("  verdict: pass");
    } else {
        eprintln!("  verdict: FAIL");
        for f in s.failures {
            eprintln!("    - {f}");
        }
    }
}
