//! What each command of the binary does; `main.rs` parses the command line and dispatches here.

pub mod demo;
pub mod serve;
pub mod sim;

/// SIGHUP asks for a reload (a message on the channel); SIGTERM or Ctrl-C for a shutdown (the
/// future completes).
pub fn signals() -> (
    tokio::sync::mpsc::Receiver<()>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    let _ = reload_tx.try_send(());
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(reload_tx);
    (reload_rx, shutdown_signal())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
