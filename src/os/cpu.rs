//! How busy the CPUs this process may run on are: their busy share of the
//! time between two looks, from `/proc/stat` (the CPUs of the process's
//! affinity, so a server pinned to one core reads that core). Other
//! programs on those CPUs count too: a wake-up costs the same whoever keeps
//! the core busy. `pace` asks it before it lets a window close.

/// The CPUs to watch, and what they had done at the last look.
#[derive(Debug)]
pub struct CpuLoad {
    /// Which CPUs (`Cpus_allowed_list`, read once); empty: all of them.
    cpus: Vec<usize>,
    /// Their ticks at the last look, if there was one.
    last: Option<CpuTicks>,
    /// Whether `/proc/stat` can be read at all.
    readable: bool,
}

impl CpuLoad {
    /// Starts watching; the first `busy` has nothing to compare with.
    pub fn new() -> CpuLoad {
        let cpus = allowed_cpus().unwrap_or_default();
        let last = cpu_ticks(&cpus);
        CpuLoad {
            readable: last.is_some(),
            cpus,
            last,
        }
    }

    /// The busy share of the watched CPUs since the last look, from 0 to 1.
    /// Without a last look (`forget`) it is 1: not known to have room. Where
    /// `/proc/stat` cannot be read at all it is 0.
    pub fn busy(&mut self) -> f64 {
        if !self.readable {
            return 0.0;
        }
        let now = cpu_ticks(&self.cpus);
        let busy = match (self.last, now) {
            (Some(before), Some(after)) => after.busy_since(before),
            _ => 1.0,
        };
        self.last = now;
        busy
    }

    /// Drops the last look (nothing was measured for a while): the next
    /// `busy` starts over.
    pub fn forget(&mut self) {
        self.last = None;
    }
}

impl Default for CpuLoad {
    fn default() -> CpuLoad {
        CpuLoad::new()
    }
}

/// Busy and total time of some CPUs, in clock ticks (`/proc/stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

impl CpuTicks {
    /// The share of the time since `before` that the CPUs were busy.
    fn busy_since(self, before: CpuTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }
}

/// The ticks of the CPUs in `cpus` (all of them if empty), from `/proc/stat`.
fn cpu_ticks(cpus: &[usize]) -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(ticks_of(&stat, cpus))
}

/// Sums the `cpuN` lines of `/proc/stat` for the CPUs in `cpus` (the
/// all-CPU `cpu` line if empty): idle and iowait are idle, the other six
/// counters busy (guest time is already inside user time).
fn ticks_of(stat: &str, cpus: &[usize]) -> CpuTicks {
    let mut sum = CpuTicks::default();
    for line in stat.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        let wanted = match name.parse::<usize>() {
            Ok(cpu) => cpus.contains(&cpu),
            Err(_) => name.is_empty() && cpus.is_empty(),
        };
        if !wanted {
            continue;
        }
        let counts: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if let [user, nice, system, idle, iowait, irq, softirq, steal] = counts[..] {
            sum.busy += user + nice + system + irq + softirq + steal;
            sum.total += user + nice + system + idle + iowait + irq + softirq + steal;
        }
    }
    sum
}

/// The CPUs this process may run on (`Cpus_allowed_list` of
/// `/proc/self/status`, as `0-3,6`).
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    Some(parse_cpu_list(list.trim()))
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            cpus.extend(first..=last.min(first + 4096));
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_busy_share_of_the_cpus_it_may_run_on_is_read() {
        let stat = "cpu  30 0 10 50 10 0 0 0 0 0\n\
                    cpu0 20 0 5 20 5 0 0 0 0 0\n\
                    cpu1 10 0 5 30 5 0 0 0 0 0\n\
                    intr 1 2 3\n";
        let ticks = |busy, total| CpuTicks { busy, total };
        assert_eq!(ticks_of(stat, &[0]), ticks(25, 50));
        assert_eq!(ticks_of(stat, &[0, 1]), ticks(40, 100));
        assert_eq!(ticks_of(stat, &[]), ticks(40, 100));
        assert_eq!(ticks(34, 60).busy_since(ticks(25, 50)), 0.9);
        assert_eq!(parse_cpu_list("0-1,3"), vec![0, 1, 3]);
        assert_eq!(parse_cpu_list("2"), vec![2]);
    }

    #[test]
    fn on_this_machine_the_ticks_go_up_and_the_share_is_a_share() {
        let mut load = CpuLoad::new();
        assert!(load.readable, "/proc/stat");
        let before = cpu_ticks(&load.cpus).expect("/proc/stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cpu_ticks(&load.cpus).expect("/proc/stat").total <= before.total {
            assert!(Instant::now() < deadline, "no tick in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let busy = load.busy();
        assert!((0.0..=1.0).contains(&busy), "{busy}");
        load.forget();
        assert_eq!(load.busy(), 1.0, "no last look: not known to have room");
    }
}
