//! Read-only plugin configuration: the `[config]` table of `plugin.toml`
//! (WIT interface `config`).
//!
//! Values are always strings in the manifest; the typed helpers parse them
//! and fall back to the caller's default (logging a warning) when a value is
//! missing or malformed, because a typo in a manifest should degrade a
//! policy, not break every call. On native targets the values come from
//! [`testing::set_config`](crate::testing::set_config).
//!
//! In a guest the whole table is fetched from the host once per instance and
//! kept: a plugin version's config cannot change while an instance of it
//! lives (a new config is a new version, hence new instances), and each host
//! read costs a call across the boundary plus a copy of the value into the
//! guest's memory, several times per plugin call.

use crate::log;

/// The instance's config, sorted by key (the order the host's `entries` uses,
/// re-sorted here so that lookups never depend on it).
#[cfg(target_family = "wasm")]
fn cached() -> &'static [(String, String)] {
    static CONFIG: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut entries = crate::__private::bindings::flywheel::policy::config::entries();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    })
}

/// Run `f` over the raw value for `key` without copying it.
fn with_value<R>(key: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    #[cfg(target_family = "wasm")]
    {
        let entries = cached();
        let value = entries
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| entries[i].1.as_str());
        f(value)
    }
    #[cfg(not(target_family = "wasm"))]
    crate::testing::fake_config_with(key, f)
}

/// The raw value for `key`, if the manifest sets it.
pub fn get(key: &str) -> Option<String> {
    with_value(key, |v| v.map(str::to_owned))
}

/// Every key and value, sorted by key.
///
/// Why: for plugins whose config is open-ended (e.g. one entry per queue).
pub fn entries() -> Vec<(String, String)> {
    #[cfg(target_family = "wasm")]
    return cached().to_vec();
    #[cfg(not(target_family = "wasm"))]
    return crate::testing::fake_config_entries();
}

fn parsed<T>(key: &str, default: T, parse: impl FnOnce(&str) -> Option<T>) -> T {
    with_value(key, |raw| match raw {
        None => default,
        Some(raw) => match parse(raw.trim()) {
            Some(v) => v,
            None => {
                log::warn(&format!("config `{key}` = {raw:?} is not valid; using the default"));
                default
            }
        },
    })
}

/// `key` as a finite `f64`, or `default` if unset or not a finite number.
pub fn get_f64(key: &str, default: f64) -> f64 {
    parsed(key, default, |s| s.parse::<f64>().ok().filter(|v| v.is_finite()))
}

/// `key` as a `u64`, or `default` if unset or not a non-negative integer.
pub fn get_u64(key: &str, default: u64) -> u64 {
    parsed(key, default, |s| s.parse::<u64>().ok())
}

/// `key` as a boolean (`true/false`, `yes/no`, `on/off`, `1/0`, any case),
/// or `default` if unset or unrecognised.
pub fn get_bool(key: &str, default: bool) -> bool {
    parsed(key, default, |s| match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    })
}

/// `key` as a comma-separated list (items trimmed, empty items skipped);
/// `default` is written the same way and used when the key is unset.
///
/// Why a string default: it reads like the manifest value it stands for,
/// e.g. `get_list("topics", "medical,legal,financial")`.
pub fn get_list(key: &str, default: &str) -> Vec<String> {
    with_value(key, |raw| split_list(raw.unwrap_or(default)))
}

/// Split a comma-separated list the way [`get_list`] does.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A value a plugin derives from its config (parsed numbers, lists, a
/// compiled lexicon), worked out once per instance and shared by its calls.
///
/// Why: a plugin version's config cannot change while an instance of it
/// lives, and parsing it again on every call (a float parse, a split list,
/// a dozen allocations) cost more than some plugins' own logic. Keep one in
/// a `thread_local!` (a guest has one thread; native tests get one per
/// test):
///
/// ```
/// use flywheel_plugin::config;
///
/// struct Settings { budget: u64 }
///
/// thread_local! {
///     static SETTINGS: config::Memo<Settings> = const { config::Memo::new() };
/// }
///
/// fn settings() -> std::rc::Rc<Settings> {
///     SETTINGS.with(|m| m.get_or_init(|| Settings { budget: config::get_u64("max-words", 120) }))
/// }
/// # flywheel_plugin::testing::set_config(&[("max-words", "80")]);
/// # assert_eq!(settings().budget, 80);
/// # flywheel_plugin::testing::set_config(&[("max-words", "90")]);
/// # assert_eq!(settings().budget, 90);
/// ```
///
/// In native tests the value is worked out again whenever
/// [`testing::set_config`](crate::testing::set_config) has changed this
/// thread's config since.
pub struct Memo<T> {
    cell: std::cell::RefCell<Option<(u64, std::rc::Rc<T>)>>,
}

impl<T> Memo<T> {
    /// An empty memo.
    pub const fn new() -> Self {
        Memo {
            cell: std::cell::RefCell::new(None),
        }
    }

    /// The memoised value, computed with `init` the first time (or, natively,
    /// the first time since the config changed).
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> std::rc::Rc<T> {
        let generation = generation();
        if let Some((g, v)) = &*self.cell.borrow()
            && *g == generation
        {
            return v.clone();
        }
        // `init` runs with no borrow held: it may log, or read other memos.
        let value = std::rc::Rc::new(init());
        *self.cell.borrow_mut() = Some((generation, value.clone()));
        value
    }
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Which version of the config this is: always 0 in a guest (its config is
/// fixed), bumped natively by every `testing::set_config`.
fn generation() -> u64 {
    #[cfg(target_family = "wasm")]
    return 0;
    #[cfg(not(target_family = "wasm"))]
    return crate::testing::config_generation();
}
