//! In-memory stand-ins for the host imports, for native unit tests.
//!
//! Only compiled for non-wasm targets. All state is thread-local, and the
//! test harness runs each `#[test]` on its own thread, so tests are isolated
//! from each other without any locking or cleanup (call [`reset`] to reuse a
//! thread).

use std::{cell::RefCell, collections::BTreeMap};

use crate::{kv::Error, log::Level};

/// The maximum key length the host accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Default)]
struct State {
    config: BTreeMap<String, String>,
    /// Bumped on every config change, so `config::Memo` values are worked out again.
    config_generation: u64,
    kv: BTreeMap<String, Vec<u8>>,
    kv_quota: Option<u64>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Replace this thread's plugin config with `entries`.
///
/// Why replace rather than merge: each test states its whole config.
pub fn set_config(entries: &[(&str, &str)]) {
    STATE.with_borrow_mut(|s| {
        s.config_generation += 1;
        s.config = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    });
}

/// Set the kv byte quota (keys + values) the fake enforces; `None`, the
/// default, means unlimited.
pub fn set_kv_quota(bytes: Option<u64>) {
    STATE.with_borrow_mut(|s| s.kv_quota = bytes);
}

/// A copy of this thread's kv store, for assertions.
pub fn kv_snapshot() -> BTreeMap<String, Vec<u8>> {
    STATE.with_borrow(|s| s.kv.clone())
}

/// Take (and clear) the lines logged on this thread so far.
pub fn take_logs() -> Vec<(Level, String)> {
    STATE.with_borrow_mut(|s| std::mem::take(&mut s.logs))
}

/// Clear config, kv, quota and logs on this thread.
pub fn reset() {
    STATE.with_borrow_mut(|s| {
        *s = State {
            config_generation: s.config_generation + 1,
            ..State::default()
        }
    });
}

pub(crate) fn config_generation() -> u64 {
    STATE.with_borrow(|s| s.config_generation)
}

pub(crate) fn fake_log(level: Level, message: &str) {
    eprintln!("[plugin {}] {message}", crate::log::level_name(level));
    STATE.with_borrow_mut(|s| s.logs.push((level, message.to_owned())));
}

pub(crate) fn fake_config_with<R>(key: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    // The value is copied out first: `f` may log (a warning about a bad
    // value), which borrows the state mutably.
    let value = STATE.with_borrow(|s| s.config.get(key).cloned());
    f(value.as_deref())
}

pub(crate) fn fake_config_entries() -> Vec<(String, String)> {
    STATE.with_borrow(|s| s.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(Error::InvalidKey)
    } else {
        Ok(())
    }
}

pub(crate) fn fake_kv_get(key: &str) -> Option<Vec<u8>> {
    STATE.with_borrow(|s| s.kv.get(key).cloned())
}

pub(crate) fn fake_kv_set(key: &str, value: &[u8]) -> Result<(), Error> {
    check_key(key)?;
    STATE.with_borrow_mut(|s| {
        if let Some(quota) = s.kv_quota {
            let used: usize =
                s.kv.iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .map(|(k, v)| k.len() + v.len())
                    .sum();
            let after = (used + key.len() + value.len()) as u64;
            if after > quota {
                return Err(Error::QuotaExceeded(quota));
            }
        }
        s.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    })
}

pub(crate) fn fake_kv_delete(key: &str) -> Result<(), Error> {
    check_key(key)?;
    STATE.with_borrow_mut(|s| s.kv.remove(key));
    Ok(())
}
