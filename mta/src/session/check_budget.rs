//! A process-wide bound on the memory that content checks (mail authentication, spam
//! filters) of spooled messages may hold at once. Those checks need the whole message in
//! memory, and a message that was spooled because it is big must not be read back for fifty
//! connections at the same time: each waits for its share of the budget first.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The budget, in KiB: 160 MiB for checks in flight.
const BUDGET_KIB: u32 = 160 * 1024;
/// A message and its checked copy (the header fields are put in front of a copy) are held
/// together, plus the parser's view: about three times the message.
const COPIES: u64 = 3;
/// How long a message waits for its share before the client gets a temporary failure.
pub const WAIT: Duration = Duration::from_secs(300);

static BUDGET: Semaphore = Semaphore::const_new(BUDGET_KIB as usize);

/// The KiB a check of a `len`-byte message takes from the budget (at most all of it, so a
/// message bigger than the budget runs alone).
pub fn share(len: u64) -> u32 {
    let kib = (len.saturating_mul(COPIES) / 1024).max(1);
    kib.min(u64::from(BUDGET_KIB)) as u32
}

/// Waits for the share of a `len`-byte message; None after [`WAIT`].
pub async fn reserve(len: u64) -> Option<SemaphorePermit<'static>> {
    tokio::time::timeout(WAIT, BUDGET.acquire_many(share(len)))
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bounded_by_the_budget() {
        assert_eq!(share(0), 1);
        assert_eq!(share(1024 * 1024), 3 * 1024);
        assert_eq!(share(u64::MAX), BUDGET_KIB);
    }

    #[tokio::test]
    async fn a_second_big_check_waits_for_the_first() {
        let big = 100 * 1024 * 1024; // 300 MiB of shares: the whole budget
        let first = reserve(big).await.expect("the budget is free");
        let waiting = tokio::spawn(async move { reserve(big).await.is_some() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "ran while the first held the budget"
        );
        drop(first);
        assert!(waiting.await.unwrap());
    }
}
