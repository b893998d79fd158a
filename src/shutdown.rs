//! One future for SIGINT/SIGTERM (docs/PROTOCOL.md "Closing": close 1001,
//! then exit 0).

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now and resolves on the first
/// of them. Not an `async fn`: a handler installed only on the first poll
/// would leave a window after the "listening" log line in which a SIGTERM
/// still ends the process at once, without the drain.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .map_err(|err| tracing::warn!(error = %err, "cannot listen for {name}"))
                .ok()
        };
        let interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                _ = received(interrupt) => {}
                _ = received(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
