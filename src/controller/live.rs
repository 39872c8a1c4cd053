//! The controller's settings that a configuration reload changes while it runs
//! ([`Command::Settings`](super::Command::Settings)): its own, the runtime's timeouts it hands
//! on, and the kill and start places whose numbers are two of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::{AutokillConfig, Config};

/// What a reload changes in the controller without a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveSettings {
    /// `defaults.drain_timeout`: for drains that start from now on.
    pub drain_timeout: Duration,
    /// `autokill.jitter`: for budgets drawn from now on (instances created, or a declared
    /// instance whose `num_requests` changed); budgets drawn before are kept.
    pub autokill: AutokillConfig,
    /// `runtime.max_concurrent_kills`.
    pub max_concurrent_kills: usize,
    /// `runtime.max_concurrent_starts`.
    pub max_concurrent_starts: usize,
    /// `runtime.stop_grace`, for stops that begin from now on.
    pub stop_grace: Duration,
    /// `runtime.start_timeout`, for starts that begin from now on.
    pub start_timeout: Duration,
}

impl LiveSettings {
    /// The live settings of `config`.
    pub fn of(config: &Config) -> LiveSettings {
        LiveSettings {
            drain_timeout: config.defaults.drain_timeout,
            autokill: config.autokill,
            max_concurrent_kills: config.runtime.max_concurrent_kills,
            max_concurrent_starts: config.runtime.max_concurrent_starts,
            stop_grace: config.runtime.stop_grace,
            start_timeout: config.runtime.start_timeout,
        }
    }
}

/// Places for runtime calls of one kind: stops and deletes (`runtime.max_concurrent_kills`), or
/// starts (`runtime.max_concurrent_starts`). A kill storm, or a restart of everything after a
/// crash, queues on the semaphore, in order, instead of asking the engine (or the host's cores)
/// for everything at once.
#[derive(Debug)]
pub(super) struct Places {
    semaphore: Arc<Semaphore>,
    size: usize,
}

impl Places {
    /// `size` places (at least one).
    pub(super) fn new(size: usize) -> Places {
        let size = size.max(1);
        Places {
            semaphore: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// The semaphore a call takes its place from.
    pub(super) fn semaphore(&self) -> Arc<Semaphore> {
        Arc::clone(&self.semaphore)
    }

    /// Changes the number of places. More: the waiting calls go at once. Fewer: the places
    /// are taken back as calls in progress give them back (none is cut short), and calls that
    /// wait meanwhile wait behind the taking back, in order.
    pub(super) fn resize(&mut self, size: usize) {
        let size = size.max(1);
        if size > self.size {
            self.semaphore.add_permits(size - self.size);
        } else if size < self.size {
            let fewer = u32::try_from(self.size - size).unwrap_or(u32::MAX);
            let semaphore = Arc::clone(&self.semaphore);
            tokio::spawn(async move {
                if let Ok(places) = semaphore.acquire_many_owned(fewer).await {
                    places.forget();
                }
            });
        }
        self.size = size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resize changes how many kills run at once: more at once when grown, and when shrunk,
    /// fewer once those in progress have given their places back.
    #[tokio::test]
    async fn kill_places_grow_and_shrink() {
        let mut places = Places::new(2);
        let sem = places.semaphore();
        let a = Arc::clone(&sem).acquire_owned().await.expect("open");
        let b = Arc::clone(&sem).acquire_owned().await.expect("open");
        assert_eq!(sem.available_permits(), 0);
        places.resize(5);
        assert_eq!(
            sem.available_permits(),
            3,
            "grown: three more kills go at once"
        );
        places.resize(1);
        // Let the taking back run: it takes the three free places, and waits for one of the
        // two in use.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(sem.available_permits(), 0);
        drop(a);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(sem.available_permits(), 0, "the freed place was taken back");
        drop(b);
        assert_eq!(sem.available_permits(), 1, "one place left: the new size");
        places.resize(0);
        assert_eq!(places.size, 1, "never fewer than one place");
    }
}
