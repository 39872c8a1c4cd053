//! Two pieces of start-up work at once, on two threads (a large store's read, a recovery's
//! views): the only parallel work the controller side does, so no pool is kept for it.

/// Runs `left` on a thread of its own (named `name`) and `right` on this one, and returns both
/// results; a panic in `left` goes on here. Without a thread to be had, `left` runs here after
/// `right`.
pub(crate) fn join<A: Send, B>(
    name: &str,
    left: impl Fn() -> A + Sync,
    right: impl FnOnce() -> B,
) -> (A, B) {
    std::thread::scope(|scope| {
        let other = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, &left);
        let b = right();
        let a = match other {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => left(),
        };
        (a, b)
    })
}
