//! Starts in turn: each runtime start waits for one of `runtime.max_concurrent_starts` places,
//! and holds it until the instance answers or its start fails. A start that a stop or a delete
//! overtakes while it waits never begins. At start, no start begins before what a crashed run
//! left is removed ([`Starts::wait_for_clearing`]).
//!
//! Without the places, a restart after a crash with a thousand instances running would spawn a
//! thousand processes (or ask the engine for a thousand container starts) in one go, and the
//! host's cores would go to their start-up for seconds while the proxy and the admin API wait
//! for theirs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use super::Command;
use super::live::Places;
use crate::runtime::{BoxFuture, Runtime};

/// The controller's side: the places, and the starts asked for that have not reported back.
pub(super) struct Starts {
    places: Places,
    /// By instance: the attempt of its start in progress or waiting, and that start's ticket.
    asked: hashbrown::HashMap<Uuid, (u64, Arc<Ticket>)>,
    /// The tasks of starts asked for by the effects being carried out, spawned once they are.
    tasks: Vec<BoxFuture<'static, ()>>,
    /// While set, [`Starts::release`] keeps the tasks (see [`Starts::hold`]).
    held: bool,
    /// True once no leftover of an earlier run stands in the way (see
    /// [`Starts::wait_for_clearing`]).
    cleared: watch::Receiver<bool>,
}

impl Starts {
    /// `size` places (at least one).
    pub(super) fn new(size: usize) -> Starts {
        Starts {
            places: Places::new(size),
            asked: hashbrown::HashMap::new(),
            tasks: Vec::new(),
            held: false,
            cleared: watch::channel(true).1,
        }
    }

    /// From now on starts wait, before they take a place, until the sender returned says
    /// `true` (or is dropped): what an earlier run left is being removed meanwhile.
    pub(super) fn wait_for_clearing(&mut self) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.cleared = rx;
        tx
    }

    /// Keeps the task of a launch (a create, with or without its start) or a start until
    /// [`Starts::release`].
    pub(super) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// Spawns the tasks kept on `work`, unless held.
    pub(super) fn release(&mut self, work: &Handle) {
        if !self.held {
            for task in self.tasks.drain(..) {
                work.spawn(task);
            }
        }
    }

    /// Keeps the tasks of starts past [`Starts::release`] until [`Starts::unhold`].
    pub(super) fn hold(&mut self) {
        self.held = true;
    }

    /// Spawns the tasks held, and from now on each batch's at its end.
    pub(super) fn unhold(&mut self, work: &Handle) {
        self.held = false;
        self.release(work);
    }

    /// Changes the number of places (see [`Places::resize`]).
    pub(super) fn resize(&mut self, size: usize) {
        self.places.resize(size);
    }

    /// Start `attempt` of instance `id` is asked for: what its task needs to wait its turn.
    pub(super) fn ask(&mut self, id: Uuid, attempt: u64) -> Turn {
        let ticket = Arc::new(Ticket(AtomicU8::new(WAITING)));
        self.asked.insert(id, (attempt, Arc::clone(&ticket)));
        Turn {
            places: self.places.semaphore(),
            ticket,
            cleared: self.cleared.clone(),
        }
    }

    /// Instance `id` is stopped or deleted: its start, if it still waits for a place, never
    /// begins (it reports [`Command::NotStarted`]). One that began is the runtime's to end.
    pub(super) fn overtake(&mut self, id: Uuid) {
        if let Some((_, ticket)) = self.asked.remove(&id) {
            ticket.cancel();
        }
    }

    /// Start `attempt` of `id` reported back.
    pub(super) fn reported(&mut self, id: Uuid, attempt: u64) {
        if self.asked.get(&id).is_some_and(|(a, _)| *a == attempt) {
            self.asked.remove(&id);
        }
    }

    /// The controller stops: starts still waiting never begin.
    pub(super) fn close(&self) {
        self.places.semaphore().close();
    }
}

/// The command that reports how start `attempt` of `id` went: `None` if it never began.
pub(super) fn report(
    id: Uuid,
    attempt: u64,
    result: Option<Result<SocketAddr, String>>,
) -> Command {
    match result {
        Some(result) => Command::Started {
            id,
            attempt,
            result,
        },
        None => Command::NotStarted { id, attempt },
    }
}

/// One start's way through: its place, and whether it may still begin.
pub(super) struct Turn {
    places: Arc<Semaphore>,
    ticket: Arc<Ticket>,
    cleared: watch::Receiver<bool>,
}

impl Turn {
    /// Waits until the leftovers of an earlier run are gone, then for a place, then starts `id`
    /// unless it was overtaken meanwhile; the place is held until the runtime's start ends.
    /// `None`: the start never began (overtaken, or the controller stopped).
    pub(super) async fn start(
        mut self,
        runtime: &dyn Runtime,
        id: Uuid,
    ) -> Option<Result<SocketAddr, String>> {
        // An error: the clearing task is gone without saying (it panicked); it will not
        // say later, and holding every start back for good would be worse.
        let _ = self.cleared.wait_for(|cleared| *cleared).await;
        // Closed: the controller stopped, and nothing would hear how the start went.
        let _place = self.places.acquire_owned().await.ok()?;
        if !self.ticket.begin() {
            return None;
        }
        Some(runtime.start(id).await.map_err(|e| e.to_string()))
    }
}

const WAITING: u8 = 0;
const BEGUN: u8 = 1;
const OVERTAKEN: u8 = 2;

/// Taken once: by the start when its place comes, or by a stop or delete that comes first.
#[derive(Debug)]
struct Ticket(AtomicU8);

impl Ticket {
    fn begin(&self) -> bool {
        self.0
            .compare_exchange(WAITING, BEGUN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(WAITING, OVERTAKEN, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket is taken once: a start that began cannot be overtaken, and one overtaken
    /// cannot begin.
    #[test]
    fn a_ticket_is_taken_once() {
        let mut starts = Starts::new(1);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = starts.ask(a, 1);
        assert!(first.ticket.begin());
        starts.overtake(a);
        assert!(!first.ticket.begin(), "began once");
        let second = starts.ask(b, 1);
        starts.overtake(b);
        assert!(!second.ticket.begin(), "overtaken before it began");
        assert!(starts.asked.is_empty());
    }

    /// Only the report of the start asked last ends its entry: an older attempt's late report
    /// leaves the newer start overtakable.
    #[test]
    fn an_older_report_leaves_the_newer_start() {
        let mut starts = Starts::new(1);
        let id = Uuid::from_u128(1);
        let _old = starts.ask(id, 1);
        let new = starts.ask(id, 2);
        starts.reported(id, 1);
        starts.overtake(id);
        assert!(!new.ticket.begin());
        let _again = starts.ask(id, 3);
        starts.reported(id, 3);
        assert!(starts.asked.is_empty());
    }
}
