//! Containment of a panic in one connection's session: the rest of the process goes on.

/// Runs a connection's task so that a panic in it ends that connection only, and is
/// logged: the session runs as a task of its own, and its panic comes back here as an
/// error instead of unwinding further. (The release profile unwinds: no `panic = "abort"`.)
pub async fn contain_panics<F>(session: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let task = tokio::spawn(session.in_current_span());
    if let Err(e) = task.await
        && e.is_panic()
    {
        let payload = e.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(
            panic = %crate::log_escape::escape(&message),
            "session panicked; only its connection was closed"
        );
    }
}

#[cfg(test)]
mod tests {
    /// A panicking session ends, logged, and the caller (the listener's task) goes on.
    #[tokio::test]
    async fn a_panicking_session_is_contained() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        super::contain_panics(async { panic!("session bug") }).await;
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        super::contain_panics(async move {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .await;
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "the next session still runs"
        );
    }
}
