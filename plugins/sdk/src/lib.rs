//! # flywheel-plugin: write Flywheel policy plugins in plain Rust
//!
//! A Flywheel plugin is a WebAssembly component that implements one of the
//! three worlds of the `flywheel:policy@0.2.0` contract (`wit/policy.wit`):
//! a **scorer** grades an answer, a **router** decides whether a person must
//! look at it, a **refiner** proposes a better prompt template. This crate
//! hides the component-model plumbing: you write a struct, implement one
//! trait ([`Scorer`], [`Router`] or [`Refiner`]) and call one macro
//! ([`export_scorer!`], [`export_router!`] or [`export_refiner!`]).
//!
//! A complete scorer (build it with
//! `cargo build --release --target wasm32-wasip2`):
//!
//! ```no_run
//! use flywheel_plugin::prelude::*;
//!
//! /// Penalises answers longer than the configured word budget.
//! struct Brevity;
//!
//! impl Scorer for Brevity {
//!     fn score(event: Event) -> Result<Vec<Score>, String> {
//!         // `[config] max-words = "120"` in plugin.toml; 120 when unset.
//!         let budget = config::get_u64("max-words", 120).max(1) as f64;
//!         let words = text::word_count(event.output()) as f64;
//!         let value = (budget / words.max(1.0)).min(1.0);
//!         log::debug(&format!("{words} words, budget {budget}"));
//!         Ok(vec![
//!             Score::new("brevity", value)
//!                 .with_label(if value < 1.0 { "long" } else { "ok" })
//!                 .with_reason(format!("{words} words against a budget of {budget}")),
//!         ])
//!     }
//! }
//!
//! flywheel_plugin::export_scorer!(Brevity);
//! ```
//!
//! The crate must be a `cdylib` (`[lib] crate-type = ["cdylib"]`); for
//! `wasm32-wasip2` the linker already emits a component, no post-processing
//! step is needed.
//!
//! ## Testing natively
//!
//! On non-wasm targets the host imports ([`log`], [`config`], [`kv`]) are
//! backed by per-thread in-memory fakes (see [`testing`]), and the export
//! macros only check that the trait is implemented. So plugin logic is
//! tested with a plain `cargo test`, no runtime needed:
//!
//! ```
//! use flywheel_plugin::{config, testing};
//!
//! testing::set_config(&[("max-words", "80")]);
//! assert_eq!(config::get_u64("max-words", 120), 80);
//! ```

#![warn(missing_docs)]

pub mod config;
mod event;
pub mod kv;
pub mod log;
#[cfg(not(target_family = "wasm"))]
pub mod testing;
pub mod text;
mod types;

pub use event::{Event, EventData};
pub use types::{Prompt, PromptRef, Proposal, QueueItem, Rating, Route, Score, Signal, Thumb};

/// Everything a typical plugin needs, in one glob import: the data types,
/// the three plugin traits and the host-import modules.
///
/// Why: keeps the boilerplate of a plugin to a single `use` line.
pub mod prelude {
    pub use crate::{
        Event, EventData, Prompt, PromptRef, Proposal, QueueItem, Rating, Refiner, Route, Router, Score, Scorer,
        Signal, Thumb, config, kv, log, text,
    };
}

/// A plugin that grades an answer (the `scorer` world).
///
/// Why a trait with an associated function and no `self`: the host may
/// create a fresh instance for every call, so a plugin cannot rely on state
/// kept in memory between calls (use [`kv`] for that).
pub trait Scorer {
    /// Grade one event. Return zero or more scores, each with a value in
    /// `0.0..=1.0` (the host rejects NaN and out-of-range values). An empty
    /// list means "nothing to say"; `Err` means "I could not score this" and
    /// is recorded as a plugin error.
    fn score(event: Event) -> Result<Vec<Score>, String>;
}

/// A plugin that decides whether a person should look at an answer (the
/// `router` world).
///
/// Why it gets every scorer's scores: routing policy is where the scores of
/// independent scorers are combined.
pub trait Router {
    /// Vote on one event. When several routers vote, the most cautious vote
    /// wins (review > label > accept; drop only if every router drops).
    fn route(event: Event, scores: Vec<Score>) -> Result<Route, String>;
}

/// A plugin that proposes a better prompt template from recent failures of
/// the current one (the `refiner` world).
///
/// Why `Option`: "no change worth proposing" is the common, healthy answer.
pub trait Refiner {
    /// Propose a new template for `prompt`, or `None`. Proposals are never
    /// applied silently: an admin accepts them.
    fn refine(prompt: Prompt, failures: Vec<Event>) -> Result<Option<Proposal>, String>;
}

/// Export a type implementing [`Scorer`] as the component's `score` function.
///
/// Call it once, at the crate root of a `cdylib` crate. On non-wasm targets
/// it only checks that the type implements the trait, so the crate's native
/// unit tests still build.
///
/// The plugin crate must depend on this SDK under its own name,
/// `flywheel_plugin` (the generated bindings refer to it by that path).
#[macro_export]
macro_rules! export_scorer {
    ($plugin:ty) => {
        const _: () = {
            fn assert_plugin<T: $crate::Scorer>() {}
            let _ = assert_plugin::<$plugin>;
        };
        // Generated code: not the plugin author's to lint.
        #[cfg(target_family = "wasm")]
        #[allow(dead_code, unused_imports, missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
        const _: () = {
            mod __flywheel_bindings {
                $crate::__flywheel_generate_scorer!();
            }
            struct __FlywheelExport;
            impl __flywheel_bindings::Guest for __FlywheelExport {
                fn score(
                    event: $crate::__private::bindings::flywheel::policy::types::Event,
                ) -> Result<Vec<$crate::Score>, String> {
                    $crate::__private::install_panic_hook();
                    <$plugin as $crate::Scorer>::score($crate::Event::from_host(event))
                }
            }
            __flywheel_bindings::export! { __FlywheelExport with_types_in __flywheel_bindings }
        };
    };
}

/// Export a type implementing [`Router`] as the component's `route` function.
///
/// See [`export_scorer!`] for where to call it and what it does natively.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        const _: () = {
            fn assert_plugin<T: $crate::Router>() {}
            let _ = assert_plugin::<$plugin>;
        };
        // Generated code: not the plugin author's to lint.
        #[cfg(target_family = "wasm")]
        #[allow(dead_code, unused_imports, missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
        const _: () = {
            mod __flywheel_bindings {
                $crate::__flywheel_generate_router!();
            }
            struct __FlywheelExport;
            impl __flywheel_bindings::Guest for __FlywheelExport {
                fn route(
                    event: $crate::__private::bindings::flywheel::policy::types::Event,
                    scores: Vec<$crate::Score>,
                ) -> Result<$crate::Route, String> {
                    $crate::__private::install_panic_hook();
                    <$plugin as $crate::Router>::route($crate::Event::from_host(event), scores)
                }
            }
            __flywheel_bindings::export! { __FlywheelExport with_types_in __flywheel_bindings }
        };
    };
}

/// Export a type implementing [`Refiner`] as the component's `refine`
/// function.
///
/// See [`export_scorer!`] for where to call it and what it does natively.
#[macro_export]
macro_rules! export_refiner {
    ($plugin:ty) => {
        const _: () = {
            fn assert_plugin<T: $crate::Refiner>() {}
            let _ = assert_plugin::<$plugin>;
        };
        // Generated code: not the plugin author's to lint.
        #[cfg(target_family = "wasm")]
        #[allow(dead_code, unused_imports, missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
        const _: () = {
            mod __flywheel_bindings {
                $crate::__flywheel_generate_refiner!();
            }
            struct __FlywheelExport;
            impl __flywheel_bindings::Guest for __FlywheelExport {
                fn refine(
                    prompt: $crate::Prompt,
                    failures: Vec<$crate::__private::bindings::flywheel::policy::types::Event>,
                ) -> Result<Option<$crate::Proposal>, String> {
                    $crate::__private::install_panic_hook();
                    let failures = failures.into_iter().map($crate::Event::from_host).collect();
                    <$plugin as $crate::Refiner>::refine(prompt, failures)
                }
            }
            __flywheel_bindings::export! { __FlywheelExport with_types_in __flywheel_bindings }
        };
    };
}

/// Implementation details of the export macros. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Route panic messages through the host's `log` (at error level) before the
    /// guest aborts, so the host can say *why* a plugin trapped instead of only
    /// "unreachable". Installed on the first call of each instance; cheap after that.
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("panic: {info}"));
            }));
        });
    }

    /// Types and host imports, generated once here and shared (through
    /// `with`) by the export half that each plugin crate generates.
    #[allow(missing_docs, dead_code, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            inline: "
                package flywheel:sdk;
                world base {
                    import flywheel:policy/types@0.2.0;
                    include flywheel:policy/host@0.2.0;
                }
            ",
            world: "flywheel:sdk/base",
            generate_unused_types: true,
            generate_all,
            additional_derives: [PartialEq],
        });
    }
}

// `__flywheel_generate_{scorer,router,refiner}!`: see build.rs.
include!(concat!(env!("OUT_DIR"), "/export_macros.rs"));
