//! Cost of one argon2id hash / verification at Bulkhead's parameters (19 MiB, t=2, p=1).
//! Run: `cargo bench -p bulkhead-core --bench password`.

use bulkhead_core::password::{hash_password, verify_password};
use std::time::Instant;

const ROUNDS: usize = 30;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let phc = hash_password("plum-river-lantern-42")?;
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let ok = verify_password("plum-river-lantern-42", &phc);
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(ok, "verification failed");
    }
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "argon2id verify (m=19 MiB, t=2, p=1), {ROUNDS} rounds: mean {mean:.1} ms, p50 {:.1} ms, max {:.1} ms",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    println!("=> one core verifies ~{:.0} logins/s", 1000.0 / mean);
    Ok(())
}
