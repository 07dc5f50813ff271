//! The `flywheel-plugin` SDK's API, rebuilt on top of `extism-pdk`.
//!
//! Why: the Extism peer must run *the same* scorer code as our components. The
//! example plugins are written against `flywheel_plugin` (types, `config`, `log`,
//! `text`, `Scorer`), whose wasm half is wit-bindgen bindings for the component
//! model. This crate keeps the SDK's own source for everything that is logic
//! (`text.rs`, `types.rs`, `event.rs`, `config.rs`, `log.rs` are included verbatim
//! from `plugins/sdk/src/` with `#[path]`) and replaces only the generated layer
//! underneath: the WIT records become plain serde structs, the `event` resource a
//! type that is never constructed (Extism hands the guest the event's data, an
//! `EventData`), and the `config` and `log` imports go to Extism's `config_get` and
//! `log_*` host functions.
//!
//! `export_scorer!` only checks the trait here: the guest crate exports its
//! functions with `#[plugin_fn]`.

// The SDK's own source, formatted in plugins/ with its own rustfmt.toml.
#[rustfmt::skip]
#[path = "../../../../plugins/sdk/src/config.rs"]
pub mod config;
#[rustfmt::skip]
#[path = "../../../../plugins/sdk/src/log.rs"]
pub mod log;
#[rustfmt::skip]
#[path = "../../../../plugins/sdk/src/text.rs"]
pub mod text;
#[rustfmt::skip]
#[path = "../../../../plugins/sdk/src/types.rs"]
mod types;
#[rustfmt::skip]
#[path = "../../../../plugins/sdk/src/event.rs"]
mod event;

pub use event::{Event, EventData};
pub use types::{Prompt, PromptRef, Proposal, QueueItem, Rating, Route, Score, Signal, Thumb};

/// As in the SDK: everything a typical plugin needs.
pub mod prelude {
    pub use crate::{
        Event, Prompt, PromptRef, Proposal, QueueItem, Rating, Route, Score, Scorer, Signal, Thumb, config, log, text,
    };
}

/// A plugin that grades an answer (the SDK's trait, unchanged).
pub trait Scorer {
    /// Grade one event.
    fn score(event: Event) -> Result<Vec<Score>, String>;
}

/// The SDK's export macro, reduced to its trait check: Extism exports are plain
/// `#[plugin_fn]` functions in the guest crate.
#[macro_export]
macro_rules! export_scorer {
    ($plugin:ty) => {
        const _: () = {
            fn assert_plugin<T: $crate::Scorer>() {}
            let _ = assert_plugin::<$plugin>;
        };
    };
}

/// What wit-bindgen generates in the real SDK, written by hand: the same records
/// (plus serde, for Extism's JSON), and the imports on Extism's host functions.
#[doc(hidden)]
pub mod __private {
    pub mod bindings {
        pub mod flywheel {
            pub mod policy {
                pub mod types {
                    use serde::{Deserialize, Serialize};

                    /// WIT `prompt-ref`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub struct PromptRef {
                        pub name: String,
                        pub version: String,
                    }

                    /// WIT `thumb`.
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
                    pub enum Thumb {
                        Up,
                        Down,
                    }

                    /// WIT `rating`.
                    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
                    pub struct Rating {
                        pub value: f64,
                        pub scale: f64,
                    }

                    /// WIT `signal`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub enum Signal {
                        Thumbs(Thumb),
                        Rating(Rating),
                        Correction(String),
                        Clarification(String),
                        Comment(String),
                        None,
                    }

                    /// WIT resource `event`: a host handle, which Extism has not got.
                    /// Never constructed here (events arrive as data); its methods exist
                    /// only so that the SDK's `event.rs` compiles unchanged.
                    pub enum Event {}

                    impl Event {
                        pub fn id(&self) -> String {
                            match *self {}
                        }
                        pub fn received_at(&self) -> u64 {
                            match *self {}
                        }
                        pub fn trace_id(&self) -> Option<String> {
                            match *self {}
                        }
                        pub fn session_id(&self) -> Option<String> {
                            match *self {}
                        }
                        pub fn user_id(&self) -> Option<String> {
                            match *self {}
                        }
                        pub fn model(&self) -> Option<String> {
                            match *self {}
                        }
                        pub fn prompt(&self) -> Option<PromptRef> {
                            match *self {}
                        }
                        pub fn input(&self) -> String {
                            match *self {}
                        }
                        pub fn output(&self) -> String {
                            match *self {}
                        }
                        pub fn context(&self) -> Vec<String> {
                            match *self {}
                        }
                        pub fn signal(&self) -> Signal {
                            match *self {}
                        }
                        pub fn metadata(&self) -> Vec<(String, String)> {
                            match *self {}
                        }
                    }

                    /// WIT `score`; serialised as `flywheel_model::Score` is.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub struct Score {
                        pub name: String,
                        pub value: f64,
                        #[serde(default, skip_serializing_if = "Option::is_none")]
                        pub label: Option<String>,
                        #[serde(default, skip_serializing_if = "Option::is_none")]
                        pub reason: Option<String>,
                    }

                    /// WIT `queue-item`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub struct QueueItem {
                        pub queue: String,
                        pub priority: u8,
                        pub reason: String,
                    }

                    /// WIT `route`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub enum Route {
                        Accept,
                        Label(QueueItem),
                        Review(QueueItem),
                        Drop(String),
                    }

                    /// WIT `prompt`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub struct Prompt {
                        pub name: String,
                        pub version: String,
                        pub template: String,
                    }

                    /// WIT `proposal`.
                    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
                    pub struct Proposal {
                        pub template: String,
                        pub rationale: String,
                        pub evidence: Vec<String>,
                    }
                }

                /// WIT `config`, on Extism's plugin config (the manifest's `config` map).
                pub mod config {
                    pub fn get(key: &str) -> Option<String> {
                        // Only fails if the guest cannot allocate the key.
                        extism_pdk::config::get(key).ok().flatten()
                    }

                    /// Extism cannot list its config: only the keys asked for are known.
                    pub fn entries() -> Vec<(String, String)> {
                        Vec::new()
                    }
                }

                /// WIT `log`, on Extism's `log_*` host functions.
                pub mod log {
                    /// WIT `log.level`.
                    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
                    pub enum Level {
                        Trace,
                        Debug,
                        Info,
                        Warn,
                        Error,
                    }

                    pub fn log(level: Level, message: &str) {
                        use extism_pdk::LogLevel;
                        let level = match level {
                            Level::Trace => LogLevel::Trace,
                            Level::Debug => LogLevel::Debug,
                            Level::Info => LogLevel::Info,
                            Level::Warn => LogLevel::Warn,
                            Level::Error => LogLevel::Error,
                        };
                        extism_pdk::log!(level, "{message}");
                    }
                }
            }
        }
    }
}

/// Natively there is no Extism host; the SDK files call these fakes there (this
/// crate is only ever run as wasm; this keeps `cargo check` on the host working).
#[cfg(not(target_family = "wasm"))]
mod testing {
    use crate::log::Level;

    pub(crate) fn fake_config_with<R>(_key: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
        f(None)
    }

    pub(crate) fn config_generation() -> u64 {
        0
    }

    pub(crate) fn fake_config_entries() -> Vec<(String, String)> {
        Vec::new()
    }

    pub(crate) fn fake_log(_level: Level, _message: &str) {}
}
