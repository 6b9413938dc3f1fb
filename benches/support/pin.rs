//! CPU pinning for a benchmark whose load generator must not share the measured cores: the
//! generator (this process, and the `wrk` it starts) on the last CPU, the server under test
//! (the API child and every PostgreSQL process, whose postmaster passes its mask on to new
//! backends) on the others; undone when dropped. PostgreSQL's processes are found by
//! `support_cpu`.

use std::process::Command;

/// Pinned processes, unpinned on drop.
pub struct Pinned {
    all: String,
    pids: Vec<u32>,
}

impl Pinned {
    /// Pins this process to the last CPU and `server` plus PostgreSQL to the rest. Needs at
    /// least two CPUs, `taskset` and `pgrep` (util-linux, procps), and the right to change
    /// PostgreSQL's processes (root, or the same user).
    pub fn generator_apart(server: u32) -> Result<Self, String> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        if cpus < 2 {
            return Err(format!(
                "pinning needs 2 CPUs or more, this machine has {cpus}"
            ));
        }
        let last = cpus - 1;
        let measured = if last == 1 {
            "0".to_owned()
        } else {
            format!("0-{}", last - 1)
        };
        let mut pins = Self {
            all: format!("0-{last}"),
            pids: Vec::new(),
        };
        let mut server_side = crate::support_cpu::postgres_pids()?;
        if server_side.is_empty() {
            return Err("no PostgreSQL process found to pin (pgrep -x postgres)".to_owned());
        }
        server_side.push(server);
        for pid in server_side {
            set(pid, &measured)?;
            pins.pids.push(pid);
        }
        set(std::process::id(), &last.to_string())?;
        pins.pids.push(std::process::id());
        println!(
            "pinned: load generator (this process, wrk) on CPU {last}; API and PostgreSQL \
             ({} processes) on CPU {measured}",
            pins.pids.len() - 1
        );
        Ok(pins)
    }
}

/// Sets the CPU list of every thread of `pid`.
fn set(pid: u32, cpus: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-cp", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -cp {cpus} {pid} failed ({status})"))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // PostgreSQL backends started meanwhile inherited the postmaster's mask: unpin them too.
        if let Ok(postgres) = crate::support_cpu::postgres_pids() {
            self.pids.extend(postgres);
        }
        for pid in &self.pids {
            let _ = set(*pid, &self.all);
        }
    }
}
