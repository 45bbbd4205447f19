//! The number of messages in the queue, for the `hermod_queue_size` gauge.
//!
//! Counting rows after every change would cost a query per message, so the queue applies
//! each of its own changes to an in-memory count (+1 per message queued, -1 per message
//! removed) and recounts the database now and then ([`QueueSize::recount`]) to see changes
//! made by other processes (`hermod queue delete`) or lost when a write's caller went away.
//! A recount is kept only if no change of this process was under way while it ran, so it
//! never double-counts a message whose commit it saw but whose count change was not applied
//! yet.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use hermod_common::metrics::{self, Gauge};

#[derive(Debug, Default)]
pub(super) struct QueueSize {
    count: AtomicI64,
    /// Set the process-wide gauge (only the daemon's queue does; not `hermod queue`, not a
    /// second handle in tests).
    publish: AtomicBool,
    /// Changes under way: a write started and its count change not applied yet.
    busy: AtomicU64,
    /// Changes applied so far.
    generation: AtomicU64,
}

/// One write to the queue; apply its effect on the count with [`Change::apply`] once it is
/// committed. Dropped without that (the write failed, or its caller went away), the next
/// recount settles the count.
pub(super) struct Change<'a> {
    size: &'a QueueSize,
}

impl QueueSize {
    pub(super) fn change(&self) -> Change<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Change { size: self }
    }

    pub(super) fn get(&self) -> i64 {
        self.count.load(Ordering::SeqCst)
    }

    pub(super) fn start_publishing(&self) {
        self.publish.store(true, Ordering::SeqCst);
        self.publish_now();
    }

    fn publish_now(&self) {
        if self.publish.load(Ordering::SeqCst) {
            metrics::set(Gauge::QueueSize, self.get());
        }
    }

    /// Sets the count to what `count` (a `COUNT(*)` of the messages) finds, unless a change
    /// of this process overlapped it. True when the count was taken.
    pub(super) async fn recount<E>(
        &self,
        count: impl Future<Output = Result<i64, E>>,
    ) -> Result<bool, E> {
        let before = self.generation.load(Ordering::SeqCst);
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Ok(false);
        }
        let rows = count.await?;
        if self.busy.load(Ordering::SeqCst) > 0 || self.generation.load(Ordering::SeqCst) != before
        {
            return Ok(false);
        }
        self.count.store(rows, Ordering::SeqCst);
        self.publish_now();
        Ok(true)
    }
}

impl Change<'_> {
    /// Adds `delta` messages (negative: removed) to the count.
    pub(super) fn apply(self, delta: i64) {
        if delta != 0 {
            self.size.count.fetch_add(delta, Ordering::SeqCst);
            self.size.publish_now();
        }
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        // Generation first: a recount that sees `busy` fall must also see the generation move.
        self.size.generation.fetch_add(1, Ordering::SeqCst);
        self.size.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_count_and_a_recount_during_a_change_is_ignored() {
        let size = QueueSize::default();
        size.change().apply(1);
        size.change().apply(1);
        size.change().apply(-1);
        assert_eq!(size.get(), 1);
        // A write under way: its commit may be in the recount's result already.
        let change = size.change();
        assert!(!size.recount(async { Ok::<_, ()>(2) }).await.unwrap());
        change.apply(1);
        assert_eq!(size.get(), 2);
        // A write that starts and ends while the database is counted.
        let overlapped = size
            .recount(async {
                size.change().apply(1);
                Ok::<_, ()>(3)
            })
            .await
            .unwrap();
        assert!(!overlapped);
        assert_eq!(size.get(), 3);
        // Quiet: the database is the authority (another process removed two messages).
        assert!(size.recount(async { Ok::<_, ()>(1) }).await.unwrap());
        assert_eq!(size.get(), 1);
    }
}
