//! The example scorers as one Extism plugin, for the side-by-side benchmark.
//!
//! Each export takes the event as JSON (`flywheel_model::Event`, the server's own
//! wire format) and returns the scores as JSON (`[flywheel_model::Score]`): the
//! Extism norm. The scoring code is not a copy: the example plugins' `lib.rs` files
//! are compiled here as modules, against `flywheel-plugin-extism`, which gives them
//! the SDK's API (and the SDK's own `text`, `config`, `log` and types source) on
//! top of extism-pdk. Their `[config]` comes from the Extism manifest.
//!
//! Why not depend on the example crates: they depend on the real SDK, whose wasm
//! half is component-model bindings (wasm32-unknown-unknown is `target_family =
//! "wasm"` too), and their `export_scorer!` would export component functions.

// The included plugin sources carry #[cfg(test)] modules written against the real
// SDK's native test fakes; they run in plugins/. A test build of this crate (which
// `cargo clippy --all-targets` makes) is empty instead.
#![cfg(not(test))]

use extism_pdk::{FnResult, Json, WithReturnCode, plugin_fn};
use flywheel_model::{Feedback, Thumb};
use flywheel_plugin::{Event, EventData, Rating, Score, Scorer, Signal};

// The example plugins' source, unchanged (formatted in plugins/, with its own
// rustfmt.toml). Items only their own tests use are dead here.
#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../../../plugins/examples/satisfaction/src/lib.rs"]
mod satisfaction;

#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../../../plugins/examples/groundedness/src/lib.rs"]
mod groundedness;

#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../../../plugins/examples/sensitive/src/lib.rs"]
mod sensitive;

/// The event as the host sends it, in the SDK's types: what a component guest gets
/// from its bindings. Strings are moved, not copied.
fn to_sdk(e: flywheel_model::Event) -> Event {
    EventData {
        id: e.id,
        received_at: e.received_at,
        trace_id: e.trace_id,
        session_id: e.session_id,
        user_id: e.user_id,
        model: e.model,
        prompt: e.prompt.map(|p| flywheel_plugin::PromptRef {
            name: p.name,
            version: p.version,
        }),
        input: e.input,
        output: e.output,
        context: e.context,
        signal: match e.feedback {
            Feedback::Thumbs { value: Thumb::Up } => Signal::Thumbs(flywheel_plugin::Thumb::Up),
            Feedback::Thumbs { value: Thumb::Down } => Signal::Thumbs(flywheel_plugin::Thumb::Down),
            Feedback::Rating { value, scale } => Signal::Rating(Rating { value, scale }),
            Feedback::Correction { text } => Signal::Correction(text),
            Feedback::Clarification { text } => Signal::Clarification(text),
            Feedback::Comment { text } => Signal::Comment(text),
            Feedback::None => Signal::None,
        },
        metadata: e.metadata.into_iter().collect(),
    }
    .into()
}

/// Run one scorer; a scorer's `Err` becomes an Extism error with return code 1.
fn run<S: Scorer>(event: flywheel_model::Event) -> FnResult<Json<Vec<Score>>> {
    S::score(to_sdk(event))
        .map(Json)
        .map_err(|message| WithReturnCode::new(extism_pdk::Error::msg(message), 1))
}

#[plugin_fn]
pub fn satisfaction(Json(event): Json<flywheel_model::Event>) -> FnResult<Json<Vec<Score>>> {
    run::<satisfaction::Satisfaction>(event)
}

#[plugin_fn]
pub fn groundedness(Json(event): Json<flywheel_model::Event>) -> FnResult<Json<Vec<Score>>> {
    run::<groundedness::Groundedness>(event)
}

#[plugin_fn]
pub fn sensitive(Json(event): Json<flywheel_model::Event>) -> FnResult<Json<Vec<Score>>> {
    run::<sensitive::Sensitive>(event)
}
