//! Announcing shutdown to every task, and knowing when they have all finished, with two plain
//! tokio channels (the pattern of tokio's mini-redis).
//!
//! - A `watch` channel says "stop": every task holds a [`Shutdown`] and selects on it.
//! - An `mpsc` channel whose only use is its senders: each task holds a [`Running`], and when
//!   the last one is dropped the receiver's `recv()` returns `None`, so the server knows every
//!   task is gone without counting them.

use tokio::sync::{mpsc, watch};

/// Held by the server: announces shutdown and waits for the tasks.
pub(crate) struct Coordinator {
    stop: watch::Sender<bool>,
    running: Option<mpsc::Sender<()>>,
    all_done: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
}

/// Held by each task: completes when shutdown is announced.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

/// Held by each task until it ends; see the module docs. A task that spawns short-lived
/// helpers (the admin API's answers) gives each a clone.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    _sender: mpsc::Sender<()>,
}

impl Coordinator {
    pub fn new() -> Coordinator {
        let (stop, shutdown) = watch::channel(false);
        let (running, all_done) = mpsc::channel(1);
        Coordinator {
            stop,
            running: Some(running),
            all_done,
            shutdown,
        }
    }

    /// What a new task needs to take part.
    pub fn task(&self) -> (Shutdown, Running) {
        let running = self.running.clone().expect("no task starts after shutdown began");
        (Shutdown(self.shutdown.clone()), Running { _sender: running })
    }

    /// Tells every task to stop, then waits until all have ended.
    pub async fn shut_down(mut self) {
        let _ = self.stop.send(true);
        self.running = None;
        let _ = self.all_done.recv().await;
    }
}

impl Shutdown {
    /// Completes once shutdown has been announced (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the coordinator is gone, which also means: stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
