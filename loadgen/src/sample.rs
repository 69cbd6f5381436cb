//! The server's resources over a long run, read from `/proc`, and the rule
//! that says whether any of them grows without bound.
//!
//! A soak samples resident memory (`VmRSS`), threads and open file
//! descriptors every few seconds. After a warm-up (rooms fill their history,
//! allocators settle) the remaining samples are cut into thirds, and a
//! resource fails if the largest value of the last third exceeds the largest
//! of the first third by more than a tolerance: a relative part (noise that
//! scales with the load) plus an absolute one (a few connections more or
//! less at the moment of sampling). Memory that plateaus, threads that come
//! and go with churn, pass; a leak of a few KiB per connection over ten
//! minutes of churn, or a thread or descriptor per dropped client, does not.
//! Comparing maxima, not averages, keeps a burst in the first third from
//! hiding a slow climb, and a burst in the last third alone from failing a
//! flat run (it would have to beat the first third's burst too).

use std::time::Duration;

/// One reading of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the soak started.
    pub at_s: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads `/proc/PID/status` and `/proc/PID/fd`; `None` if the process is gone.
pub fn read(pid: u32, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        at_s: at.as_secs_f64(),
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
    })
}

/// How much growth a resource is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// The resource's name in the table.
    pub name: &'static str,
    /// Which field of a sample.
    pub pick: fn(&Sample) -> u64,
    /// Allowed growth as a fraction of the first third's maximum.
    pub relative: f64,
    /// Allowed growth in the resource's unit, on top.
    pub absolute: u64,
}

/// RSS: +20 % + 16 MiB; threads: +20 % + 16; fds: +20 % + 32.
pub const TOLERANCES: [Tolerance; 3] = [
    Tolerance {
        name: "rss_kib",
        pick: |s| s.rss_kib,
        relative: 0.20,
        absolute: 16 * 1024,
    },
    Tolerance {
        name: "threads",
        pick: |s| s.threads,
        relative: 0.20,
        absolute: 16,
    },
    Tolerance {
        name: "fds",
        pick: |s| s.fds,
        relative: 0.20,
        absolute: 32,
    },
];

/// The verdict on one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    /// The resource.
    pub name: &'static str,
    /// Smallest and largest value over the whole run.
    pub min: u64,
    /// Largest value over the whole run.
    pub max: u64,
    /// Largest value in the first third after the warm-up.
    pub first: u64,
    /// Largest value in the last third.
    pub last: u64,
    /// What `last` may reach.
    pub limit: u64,
    /// `last <= limit` (and there were enough samples to judge).
    pub passed: bool,
}

/// Judges every resource over `samples`, ignoring those before `warmup_s`.
/// Fewer than three samples after the warm-up cannot be judged and fail.
pub fn judge(samples: &[Sample], warmup_s: f64) -> Vec<Growth> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup_s).collect();
    let third = after.len() / 3;
    TOLERANCES
        .iter()
        .map(|t| {
            let all = samples.iter().map(t.pick);
            let max_of = |part: &[&Sample]| part.iter().map(|s| (t.pick)(s)).max().unwrap_or(0);
            let first = max_of(&after[..third]);
            let last = max_of(&after[after.len() - third..]);
            let limit = first + ((first as f64 * t.relative) as u64) + t.absolute;
            Growth {
                name: t.name,
                min: all.clone().min().unwrap_or(0),
                max: all.max().unwrap_or(0),
                first,
                last,
                limit,
                passed: third > 0 && last <= limit,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..60)
            .map(|i| Sample {
                at_s: i as f64 * 5.0,
                rss_kib: values(i),
                threads: 40,
                fds: 60 + (i % 7) as u64 * 5, // churn: up and down
            })
            .collect()
    }

    #[test]
    fn a_plateau_after_the_warm_up_passes() {
        let verdicts = judge(&run(|i| 50_000 + (i.min(10) as u64) * 20_000), 60.0);
        assert!(verdicts.iter().all(|g| g.passed), "{verdicts:?}");
    }

    #[test]
    fn a_steady_climb_fails_and_names_the_resource() {
        let verdicts = judge(&run(|i| 50_000 + i as u64 * 2_000), 60.0);
        let rss = verdicts.iter().find(|g| g.name == "rss_kib").expect("rss");
        assert!(!rss.passed, "{rss:?}");
        assert!(verdicts
            .iter()
            .filter(|g| g.name != "rss_kib")
            .all(|g| g.passed));
    }

    #[test]
    fn too_few_samples_cannot_pass() {
        let samples = run(|_| 1)[..3].to_vec();
        assert!(judge(&samples, 60.0).iter().all(|g| !g.passed));
    }
}
