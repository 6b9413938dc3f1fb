//! Password-hashing slots: a bound on argon2 hashes computed at once (19 MiB each), of which
//! one client address holds at most half (at least one), so a flood of logins from one place
//! cannot take every slot other people's logins need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One hash's slots, the installation's and its address's, released together on drop.
pub struct HashingSlot {
    _global: OwnedSemaphorePermit,
    _address: OwnedSemaphorePermit,
}

pub struct HashingSlots {
    global: Arc<Semaphore>,
    by_address: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_address: usize,
}

impl HashingSlots {
    pub fn new(slots: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(slots.max(1))),
            by_address: Mutex::default(),
            per_address: (slots / 2).max(1),
        }
    }

    /// A slot for a hash requested from `address`, or `None` when none frees up in `wait`.
    pub async fn acquire(&self, address: &str, wait: Duration) -> Option<HashingSlot> {
        let mine = {
            let mut map = self
                .by_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map.len() > 1_000 {
                let idle = self.per_address;
                map.retain(|_, s| s.available_permits() < idle);
            }
            map.entry(address.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
                .clone()
        };
        let deadline = tokio::time::Instant::now() + wait;
        let address = tokio::time::timeout_at(deadline, mine.acquire_owned())
            .await
            .ok()?
            .ok()?;
        let global = tokio::time::timeout_at(deadline, self.global.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(HashingSlot {
            _global: global,
            _address: address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_address_holds_half_the_slots_and_the_others_still_get_theirs() {
        let slots = HashingSlots::new(4);
        let wait = Duration::from_millis(50);
        let a1 = slots.acquire("198.51.100.1", wait).await.expect("first");
        let a2 = slots.acquire("198.51.100.1", wait).await.expect("second");
        assert!(
            slots.acquire("198.51.100.1", wait).await.is_none(),
            "a third slot for the same address waits"
        );
        let b1 = slots
            .acquire("198.51.100.2", wait)
            .await
            .expect("other address");
        let b2 = slots
            .acquire("198.51.100.2", wait)
            .await
            .expect("other address");
        assert!(
            slots.acquire("198.51.100.3", wait).await.is_none(),
            "all four are taken"
        );
        drop((a1, a2, b1, b2));
        assert!(slots.acquire("198.51.100.3", wait).await.is_some());
        // Two slots in all: one per address.
        let small = HashingSlots::new(2);
        let _held = small.acquire("198.51.100.1", wait).await.expect("one");
        assert!(small.acquire("198.51.100.1", wait).await.is_none());
        assert!(small.acquire("198.51.100.2", wait).await.is_some());
    }
}
