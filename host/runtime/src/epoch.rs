//! The epoch ticker behind every plugin deadline.
//!
//! Wasmtime's epoch interruption traps guest code once the engine's epoch passes the
//! deadline a call set, so something must advance the epoch: one thread, every
//! [`EPOCH_TICK`]. Ticking only matters while guest code may run, and a thread that
//! wakes every tick costs an idle server CPU (about 1 % of a core at the 1 ms tick we
//! started with) and keeps the machine from idling, so the ticker parks once no call
//! has been running for [`PARK_AFTER`] ticks, and the next call wakes it. Under load it
//! never parks, so a call pays two atomic operations for it; only the first call after
//! a quiet spell pays a wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the resolution of every deadline. A call is stopped no
/// earlier than its timeout, and at most one tick after it for timeouts in whole ticks
/// (two ticks otherwise). Each tick wakes a thread on a busy core and
/// preempts whatever runs there (10–20 µs on the machines we measure on), so ticks are
/// as coarse as a plugin's deadline allows: 5 ms is 5 % of the default 100 ms timeout,
/// and a fifth of the wake-ups of a 1 ms tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Ticks without a running call before the ticker parks (100 ms).
const PARK_AFTER: u32 = 20;

/// Shared between the ticker thread and the calls that need it awake.
#[derive(Debug, Default)]
struct State {
    /// Calls (and instantiations) under way.
    running: AtomicUsize,
    /// The ticker is parked, or about to be: a call must wake it.
    parked: AtomicBool,
    stop: AtomicBool,
}

/// The ticker thread of one engine. Dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Ticker {
    state: Arc<State>,
    thread: Thread,
}

impl Ticker {
    /// Start ticking `engine`'s epoch.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let state = Arc::new(State::default());
        let handle: JoinHandle<()> = {
            let state = state.clone();
            std::thread::Builder::new()
                .name("flywheel-epoch".into())
                .spawn(move || run(&state, &engine))?
        };
        Ok(Self {
            state,
            thread: handle.thread().clone(),
        })
    }

    /// Keep the epoch advancing until the guard is dropped: hold it while guest code may
    /// run, so that the call's deadline can fire.
    pub(crate) fn awake(self: &Arc<Self>) -> Awake {
        // Counted first, then the flag read: the ticker sets the flag first, then reads
        // the count, so one of the two always sees the other (both sequentially
        // consistent) and no call runs with a parked ticker.
        self.state.running.fetch_add(1, Ordering::SeqCst);
        if self.state.parked.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
        Awake {
            ticker: self.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Keeps the ticker awake; see [`Ticker::awake`].
#[derive(Debug)]
pub(crate) struct Awake {
    ticker: Arc<Ticker>,
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.ticker.state.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn run(state: &State, engine: &Engine) {
    let mut idle = 0u32;
    while !state.stop.load(Ordering::SeqCst) {
        if state.running.load(Ordering::SeqCst) > 0 {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle >= PARK_AFTER {
            state.parked.store(true, Ordering::SeqCst);
            // Spurious wake-ups only bring the loop round again.
            while state.running.load(Ordering::SeqCst) == 0 && !state.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            state.parked.store(false, Ordering::SeqCst);
            idle = 0;
        }
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn parks_when_idle_and_wakes_for_a_call() {
        let ticker = Arc::new(Ticker::start(engine()).expect("ticker"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ticker.state.parked.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "never parked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let guard = ticker.awake();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ticker.state.parked.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Awake while a call holds it, however long.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!ticker.state.parked.load(Ordering::SeqCst));
        drop(guard);
        assert_eq!(ticker.state.running.load(Ordering::SeqCst), 0);
    }
}
