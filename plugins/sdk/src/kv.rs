//! A small persistent key-value store private to the plugin (WIT interface
//! `kv`), for stateful policies: sampling, rates, novelty.
//!
//! Keys are 1..=256 bytes; keys plus values count against the plugin's
//! `kv-quota-kib`. Every call crosses into the host, so read once per call,
//! not per token. On native targets the store is an in-memory map, see
//! [`testing`](crate::testing).

/// Why a write failed (WIT `kv.error`): quota exceeded, invalid key, or the
/// host's store is unavailable.
pub use crate::__private::bindings::flywheel::policy::kv::Error;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    #[cfg(target_family = "wasm")]
    return crate::__private::bindings::flywheel::policy::kv::get(key);
    #[cfg(not(target_family = "wasm"))]
    return crate::testing::fake_kv_get(key);
}

/// Store `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    #[cfg(target_family = "wasm")]
    return crate::__private::bindings::flywheel::policy::kv::set(key, value);
    #[cfg(not(target_family = "wasm"))]
    return crate::testing::fake_kv_set(key, value);
}

/// Remove `key`; removing a missing key is not an error.
pub fn delete(key: &str) -> Result<(), Error> {
    #[cfg(target_family = "wasm")]
    return crate::__private::bindings::flywheel::policy::kv::delete(key);
    #[cfg(not(target_family = "wasm"))]
    return crate::testing::fake_kv_delete(key);
}

/// The value under `key` decoded as a little-endian `u64` (8 bytes).
///
/// Why: counters are the most common state (rates, sampling budgets); this
/// fixes one encoding so plugin versions sharing the store agree.
pub fn get_u64(key: &str) -> Option<u64> {
    get(key)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes)
}

/// Store `value` under `key` as a little-endian `u64` (see [`get_u64`]).
pub fn set_u64(key: &str, value: u64) -> Result<(), Error> {
    set(key, &value.to_le_bytes())
}
