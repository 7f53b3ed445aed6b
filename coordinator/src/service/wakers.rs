//! Where the held polls of a host wait ([`HostWaker`]), and the commands handed to them
//! and not yet taken ([`HandOuts`]), which the report writer lets go out first. Not here:
//! what a poll answers (`api::agent`) or what starts a command (`deployments`).
//!
//! When a deployment starts for a whole fleet, every held poll is woken at once and each
//! answered host reports at once: the report batches (their store writes, the rollout
//! decision after them) then compete for the same cores with the polls still to answer,
//! and the last hosts wait for the first ones' bookkeeping. So the writer waits until this
//! coordinator's woken polls have taken their commands, for at most [`HAND_OUT_FIRST`]
//! from the first hand-out; a report's answer comes that much later at worst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hoist_protocol::agent;
use tokio::sync::Notify;

use super::locked;

/// The longest the report writer waits for woken polls to take their commands.
pub const HAND_OUT_FIRST: Duration = Duration::from_secs(1);

/// Where the polls of one host wait, and where the service leaves the command it has just
/// started for that host, so a woken poll answers without reading the store again: with
/// 20 000 hosts started at once, that read would be 20 000 queries on the one connection.
///
/// The store stays the truth. A poll looks in the store when it starts and takes the
/// handed-over command only when woken, so a command left here while no poll waited
/// (since stopped, or lost) is never answered from here; none is left unless a poll is
/// held ([`HostWaker::hold`]), and the last held poll to end drops it.
#[derive(Default)]
pub struct HostWaker {
    notify: Notify,
    /// Polls of this host held now.
    held: AtomicUsize,
    /// Boxed: every host polling has a waker, and a command inline would cost each of
    /// them its size while none is handed over.
    handoff: Mutex<Option<Handoff>>,
}

/// A command handed over and not yet taken: counted in [`HandOuts`] until it is taken,
/// replaced or dropped.
struct Handoff {
    command: Box<agent::Command>,
    _untaken: Untaken,
}

impl HostWaker {
    /// Counts a poll as held until the guard drops. Take it before looking in the store.
    pub fn hold(&self) -> Held<'_> {
        self.held.fetch_add(1, Ordering::SeqCst);
        Held(self)
    }

    /// Whether a poll of this host is held now.
    pub(super) fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) > 0
    }

    /// A wake-up future; enable it before looking in the store so a command started
    /// between the look and the wait is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The command handed over by the last wake-up, if no poll has taken it yet (boxed, as
    /// a held poll keeps room for what it may answer).
    pub fn take(&self) -> Option<Box<agent::Command>> {
        locked(&self.handoff).take().map(|h| h.command)
    }

    /// Hands `command` to the polls held now, if any, and wakes them. A host with none
    /// finds the command in the store when it next polls.
    pub(super) fn wake(&self, command: agent::Command, outs: &Arc<HandOuts>) {
        if !self.is_held() {
            return;
        }
        *locked(&self.handoff) = Some(Handoff {
            command: Box::new(command),
            _untaken: outs.add(),
        });
        self.notify.notify_waiters();
    }

    /// Wakes the polls without a command: they look in the store (a command started by
    /// another coordinator). Drops any handed-over command, which the store now decides.
    pub(super) fn nudge(&self) {
        *locked(&self.handoff) = None;
        self.notify.notify_waiters();
    }
}

/// A held poll, counted until dropped; the last one drops a command no poll took.
pub struct Held<'a>(&'a HostWaker);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.0.held.fetch_sub(1, Ordering::SeqCst) == 1 {
            *locked(&self.0.handoff) = None;
        }
    }
}

/// Commands handed to held polls here and not yet taken.
#[derive(Default)]
pub struct HandOuts {
    state: Mutex<Count>,
    all_taken: Condvar,
}

#[derive(Default)]
struct Count {
    count: usize,
    /// When the count last rose from zero.
    since: Option<Instant>,
}

impl HandOuts {
    fn add(self: &Arc<Self>) -> Untaken {
        let mut s = locked(&self.state);
        if s.count == 0 {
            s.since = Some(Instant::now());
        }
        s.count += 1;
        Untaken(self.clone())
    }

    /// Blocks until every command handed out here has been taken, or `cap` after the
    /// first of them was handed out.
    pub fn wait_taken(&self, cap: Duration) {
        let mut s = locked(&self.state);
        while s.count > 0 {
            let left = s
                .since
                .map_or(Duration::ZERO, |t| cap.saturating_sub(t.elapsed()));
            if left.is_zero() {
                return;
            }
            s = match self.all_taken.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Commands handed out here and not yet taken.
    #[cfg(test)]
    fn untaken(&self) -> usize {
        locked(&self.state).count
    }
}

/// One handed-out command's place in [`HandOuts`], given back when dropped.
struct Untaken(Arc<HandOuts>);

impl Drop for Untaken {
    fn drop(&mut self) {
        let mut s = locked(&self.0.state);
        s.count = s.count.saturating_sub(1);
        if s.count == 0 {
            s.since = None;
            self.0.all_taken.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str) -> agent::Command {
        serde_json::from_value(serde_json::json!({
            "command_id": id,
            "deployment_id": "d-1",
            "application": "shop",
            "deployment_group": "web",
            "deployment_group_id": "g-1",
            "revision": {"kind": "coordinator", "sha256": "ab", "size": 1},
            "events": ["Install"],
        }))
        .expect("a minimal command")
    }

    #[test]
    fn a_command_is_handed_only_to_a_held_poll_and_counted_until_taken() {
        let outs = Arc::new(HandOuts::default());
        let w = HostWaker::default();
        w.wake(command("c-1"), &outs);
        assert_eq!(outs.untaken(), 0, "no poll held: nothing handed over");
        assert!(w.take().is_none());

        let held = w.hold();
        w.wake(command("c-2"), &outs);
        assert_eq!(outs.untaken(), 1);
        w.wake(command("c-3"), &outs);
        assert_eq!(
            outs.untaken(),
            1,
            "a replaced hand-out is no longer counted"
        );
        assert_eq!(w.take().map(|c| c.command_id), Some("c-3".into()));
        assert_eq!(outs.untaken(), 0);

        w.wake(command("c-4"), &outs);
        assert_eq!(outs.untaken(), 1);
        drop(held);
        assert_eq!(
            outs.untaken(),
            0,
            "the last held poll drops what it did not take"
        );
        assert!(w.take().is_none());
    }

    #[test]
    fn the_writer_waits_for_hand_outs_to_be_taken_but_no_longer_than_the_cap() {
        let outs = Arc::new(HandOuts::default());
        let w = Arc::new(HostWaker::default());
        let start = Instant::now();
        outs.wait_taken(Duration::from_secs(5));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "nothing handed out: no wait"
        );

        let held = w.hold();
        w.wake(command("c-1"), &outs);
        let taker = {
            let w = w.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                w.take().map(|c| c.command_id)
            })
        };
        let start = Instant::now();
        outs.wait_taken(Duration::from_secs(30));
        let waited = start.elapsed();
        assert_eq!(taker.join().ok().flatten(), Some("c-1".into()));
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(20), "{waited:?}");

        // A hand-out nobody takes holds the writer back only until the cap.
        w.wake(command("c-2"), &outs);
        let start = Instant::now();
        outs.wait_taken(Duration::from_millis(300));
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_eq!(outs.untaken(), 1);
        drop(held);
    }
}
