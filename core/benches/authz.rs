//! Permission-check latency with 10,000 tenants × 5 members (50,000 role assignments).
//! Run: `cargo bench -p bulkhead-core --bench authz`. Prints p50/p99/max per check kind, and
//! what applying one membership change (a `g` line added or removed) costs.

use bulkhead_core::authz::{Action, Assignment, Authorizer, Domain, Object};
use bulkhead_core::domain::Role;
use std::time::Instant;
use uuid::Uuid;

const TENANTS: usize = 10_000;
const MEMBERS: usize = 5;
const CHECKS: usize = 200_000;

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Prints one line of p50/p99/max for `samples` (nanoseconds), which it sorts.
fn report(name: &str, samples: &mut [u128]) {
    samples.sort_unstable();
    println!(
        "{name:>8}: n={:>6} p50={:>6.1} µs p99={:>6.1} µs max={:>7.1} µs",
        samples.len(),
        percentile(samples, 0.50) as f64 / 1e3,
        percentile(samples, 0.99) as f64 / 1e3,
        samples.last().copied().unwrap_or(0) as f64 / 1e3,
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let roles = [
        Role::TenantAdmin,
        Role::Operator,
        Role::Approver,
        Role::Viewer,
        Role::Billing,
    ];
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::now_v7()).collect();
    let mut members = Vec::with_capacity(TENANTS * MEMBERS);
    let mut assignments = Vec::with_capacity(TENANTS * MEMBERS + 1);
    for tenant in &tenants {
        for role in roles {
            let principal = Uuid::now_v7();
            members.push((principal, *tenant, role));
            assignments.push(Assignment {
                principal_id: principal,
                role,
                domain: Domain::Tenant(*tenant),
            });
        }
    }
    let admin = Uuid::now_v7();
    assignments.push(Assignment {
        principal_id: admin,
        role: Role::PlatformAdmin,
        domain: Domain::Everywhere,
    });

    let load_started = Instant::now();
    let mut authz = Authorizer::new(&assignments, 1).await?;
    let load = load_started.elapsed();

    let objects = [
        Object::Tenant,
        Object::Member,
        Object::ApiKey,
        Object::Environment,
        Object::Job,
        Object::Credentials,
        Object::Audit,
        Object::Cost,
    ];
    let actions = [
        Action::Read,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Approve,
    ];
    // Deterministic pseudo-random walk over (principal, own/other tenant, object, action).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut denied, mut allowed) = (Vec::new(), Vec::new());
    let mut all = Vec::with_capacity(CHECKS);
    for i in 0..CHECKS {
        let r = next() as usize;
        let (principal, own_tenant, _) = members[r % members.len()];
        let tenant = if i % 4 == 0 {
            tenants[(r >> 20) % TENANTS]
        } else {
            own_tenant
        };
        let principal = if i % 100 == 0 { admin } else { principal };
        let object = objects[(r >> 8) % objects.len()];
        let action = actions[(r >> 12) % actions.len()];
        let started = Instant::now();
        let allowed_now = authz.allows(principal, Domain::Tenant(tenant), object, action);
        let took = started.elapsed().as_nanos();
        if allowed_now {
            allowed.push(took)
        } else {
            denied.push(took)
        }
        all.push(took);
    }
    println!(
        "authz bench: {TENANTS} tenants x {MEMBERS} members = {} assignments, {} policy lines",
        assignments.len(),
        bulkhead_core::authz::POLICY.lines().count()
    );
    println!("enforcer load: {:.1} ms", load.as_secs_f64() * 1e3);
    for (name, samples) in [
        ("all", &mut all),
        ("denied", &mut denied),
        ("allowed", &mut allowed),
    ] {
        report(name, samples);
    }
    // What a membership change costs each API process: one `g` line added or removed, under
    // the enforcer's write lock (requests wait for it).
    let (mut grants, mut revokes) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let change = bulkhead_core::store::principals::AssignmentChange {
            generation: 2 + i,
            assignment: Assignment {
                principal_id: Uuid::now_v7(),
                role: Role::Operator,
                domain: Domain::Tenant(tenants[i as usize % TENANTS]),
            },
            granted: true,
        };
        let started = Instant::now();
        authz
            .apply(std::slice::from_ref(&change), change.generation)
            .await?;
        grants.push(started.elapsed().as_nanos());
        let revoke = bulkhead_core::store::principals::AssignmentChange {
            granted: false,
            ..change
        };
        let started = Instant::now();
        authz
            .apply(std::slice::from_ref(&revoke), revoke.generation)
            .await?;
        revokes.push(started.elapsed().as_nanos());
    }
    for (name, samples) in [("grant", &mut grants), ("revoke", &mut revokes)] {
        report(name, samples);
    }
    Ok(())
}
