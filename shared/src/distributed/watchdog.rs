//! A watchdog for blocking calls that have no timeout of their own (NCCL collectives and the device
//! synchronisations around them): a call is armed with a deadline before it starts and disarmed when it
//! returns; if the deadline passes first, the watchdog thread reports what was stuck. For NCCL the report
//! ends the process (as PyTorch's NCCL watchdog does): a rank blocked in a kernel that waits for a dead
//! peer cannot be woken, and its exit closes its TCP link, so the other ranks fail at their next call
//! instead of waiting forever.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the watchdog does when an armed call overruns: gets a description of the call and its limit.
pub type OnExpire = Box<dyn Fn(&str, Duration) + Send>;

#[derive(Default)]
struct State {
    /// The armed call and its deadline.
    armed: Option<(String, Instant)>,
    stop: bool,
}

pub struct Watchdog {
    timeout: Duration,
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog thread; `on_expire` runs on it, at most once per armed call.
    pub fn start(timeout: Duration, on_expire: OnExpire) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("storm-watchdog".into())
            .spawn(move || watch(&watched, timeout, on_expire))?;
        Ok(Watchdog {
            timeout,
            shared,
            thread: Some(thread),
        })
    }

    /// Runs `call` under the deadline; `what` names it in the report.
    pub fn guard<T>(&self, what: &str, call: impl FnOnce() -> T) -> T {
        self.set(Some((what.to_string(), Instant::now() + self.timeout)));
        let out = call();
        self.set(None);
        out
    }

    fn set(&self, armed: Option<(String, Instant)>) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).armed = armed;
        wake.notify_one();
    }
}

fn watch(shared: &(Mutex<State>, Condvar), timeout: Duration, on_expire: OnExpire) {
    let (lock, wake) = shared;
    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if state.stop {
            return;
        }
        match &state.armed {
            None => state = wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some((what, deadline)) => {
                let now = Instant::now();
                if now >= *deadline {
                    let what = what.clone();
                    state.armed = None;
                    drop(state);
                    on_expire(&what, timeout);
                    state = lock.lock().unwrap_or_else(|p| p.into_inner());
                } else {
                    let wait = *deadline - now;
                    state = wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let (lock, wake) = &*self.shared;
            lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The NCCL policy: say which call hung and on which rank, then end the process.
pub fn exit_on_expiry(rank: usize) -> OnExpire {
    Box::new(move |what, timeout| {
        eprintln!(
            "error: rank {rank}: {what} did not finish within {}s (STORM_COLLECTIVE_TIMEOUT): a peer rank is \
             hung or gone; exiting so that every rank stops instead of waiting forever",
            timeout.as_secs_f64()
        );
        std::process::exit(1);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn an_overrunning_call_is_reported_once_and_a_quick_one_never() {
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::start(
            Duration::from_millis(100),
            Box::new(move |what, limit| tx.send((what.to_string(), limit)).unwrap()),
        )
        .unwrap();
        for _ in 0..20 {
            assert_eq!(dog.guard("quick", || 1 + 1), 2);
        }
        dog.guard("all_reduce of 40 bytes", || {
            std::thread::sleep(Duration::from_millis(400))
        });
        let (what, limit) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(what, "all_reduce of 40 bytes");
        assert_eq!(limit, Duration::from_millis(100));
        dog.guard("quick again", || ());
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            rx.try_recv().is_err(),
            "one report per overrun, none for quick calls"
        );
        drop(dog);
    }
}
