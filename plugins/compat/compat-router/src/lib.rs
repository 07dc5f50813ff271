//! Compatibility fixture: a router built against `flywheel:policy@0.1.0`, with
//! wit-bindgen and no SDK. It labels every event, naming the scores it was given.
//!
//! Why: the host must still hand a 0.1 router the event record and every score.

/// Generated code: not ours to lint.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/archive/policy-0.1.0.wit",
        world: "router",
    });
}

use bindings::flywheel::policy::types::{Event, QueueItem, Route, Score};

/// The plugin.
struct CompatRouter;

impl bindings::Guest for CompatRouter {
    fn route(event: Event, scores: Vec<Score>) -> Result<Route, String> {
        let names: Vec<String> = scores.iter().map(|s| format!("{}={:.2}", s.name, s.value)).collect();
        Ok(Route::Label(QueueItem {
            queue: "compat".into(),
            priority: 7,
            reason: format!("0.1 router saw {} with [{}]", event.id, names.join(", ")),
        }))
    }
}

bindings::export!(CompatRouter with_types_in bindings);
