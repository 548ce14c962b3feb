//! A server running as a task of this process (the in-process agent, the simulator): stopped
//! on request within a grace period, or at once when its handle is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Resolves when the server should stop: its [`ServerTask`] was stopped or dropped.
#[derive(Debug)]
pub struct StopSignal(oneshot::Receiver<()>);

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// A spawned server and the way to stop it.
#[derive(Debug)]
pub struct ServerTask<E> {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> ServerTask<E> {
    /// Spawns `serve` on the current runtime; it serves until the [`StopSignal`] it is given
    /// resolves.
    pub fn spawn<F>(serve: impl FnOnce(StopSignal) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Self {
            stop: Some(tx),
            task: tokio::spawn(serve(StopSignal(rx))),
        }
    }

    /// Tells the server to stop and waits at most `grace` for it to end; then aborts it.
    pub async fn stop(mut self, grace: Duration) {
        self.signal();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl<E> ServerTask<E> {
    fn signal(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl<E> Drop for ServerTask<E> {
    fn drop(&mut self) {
        self.signal();
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stop_lets_it_finish_and_drop_ends_it() {
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let server = ServerTask::<()>::spawn(|stop| async move {
            stop.await;
            f.store(true, Ordering::SeqCst);
            Ok(())
        });
        server.stop(Duration::from_secs(5)).await;
        assert!(finished.load(Ordering::SeqCst), "stopped within its grace");

        let (tx, rx) = oneshot::channel::<()>();
        let server = ServerTask::<()>::spawn(|_stop| async move {
            let _tx = tx; // dropped when the task ends
            std::future::pending::<()>().await;
            Ok(())
        });
        drop(server);
        assert!(rx.await.is_err(), "the task was aborted");

        // A server that ignores the signal is aborted after the grace period.
        let stuck = ServerTask::<()>::spawn(|_stop| std::future::pending());
        tokio::time::timeout(
            Duration::from_secs(5),
            stuck.stop(Duration::from_millis(10)),
        )
        .await
        .unwrap();
    }
}
