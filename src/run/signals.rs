//! Ctrl-C and SIGTERM while a run is going: the first asks it to drain (start nothing
//! new, let what is in flight finish), the second to stop at once. Only sends; the
//! dispatcher decides what each means.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    Drain,
    Abort,
}

/// Watches for Ctrl-C and SIGTERM from now on (a task on the current runtime).
pub(super) fn watch() -> mpsc::UnboundedReceiver<Interrupt> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        async fn terminate(term: &mut Option<Signal>) {
            match term {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut term = signal(SignalKind::terminate()).ok();
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate(&mut term) => {}
            }
            let what = if n == 0 {
                Interrupt::Drain
            } else {
                Interrupt::Abort
            };
            if tx.send(what).is_err() {
                return;
            }
        }
    });
    rx
}
