//! How long tests wait, and waiting on state owned by another process.

use std::time::Duration;

/// How long any single expected event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `check` holds. For state owned by another process (Redis's
/// subscription count), where no event reaches the test.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
