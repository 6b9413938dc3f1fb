//! Where a benchmark phase's CPU went, by process: the API under test, PostgreSQL's processes
//! and this process (the load generator), read from `/proc/<pid>/stat` before and after.

use std::collections::HashMap;
use std::process::Command;

/// CPU time (user + system, in clock ticks) of the processes of interest at one moment.
pub struct Reading {
    api: u64,
    postgres: HashMap<u32, u64>,
    generator: u64,
}

/// Core-seconds each part used between two readings.
pub struct Split {
    pub api: f64,
    pub postgres: f64,
    pub generator: f64,
}

/// The ids of every PostgreSQL process on this machine (`pgrep -x postgres`).
pub fn postgres_pids() -> Result<Vec<u32>, String> {
    let out = Command::new("pgrep")
        .args(["-x", "postgres"])
        .output()
        .map_err(|e| format!("pgrep: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// Reads the CPU time of `api`, of every `postgres` process alive now, and of this process.
pub fn read(api: u32) -> Reading {
    let postgres = postgres_pids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| ticks(pid).map(|t| (pid, t)))
        .collect();
    Reading {
        api: ticks(api).unwrap_or(0),
        postgres,
        generator: ticks(std::process::id()).unwrap_or(0),
    }
}

impl Reading {
    /// What each part used since `before`. A PostgreSQL process that ended in between is
    /// missed (the API's pooled connections live through a phase); one that started counts
    /// from zero.
    pub fn since(&self, before: &Reading) -> Split {
        let per_second = 100.0; // CLK_TCK on Linux
        let postgres: u64 = self
            .postgres
            .iter()
            .map(|(pid, now)| now.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        Split {
            api: self.api.saturating_sub(before.api) as f64 / per_second,
            postgres: postgres as f64 / per_second,
            generator: self.generator.saturating_sub(before.generator) as f64 / per_second,
        }
    }
}

/// utime + stime of `pid` (all its threads), in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}
