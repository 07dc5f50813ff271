//! Compatibility fixture: a refiner built against `flywheel:policy@0.1.0`, with
//! wit-bindgen and no SDK. It proposes the template with one line appended, citing
//! every failure it was given.
//!
//! Why: the host must still hand a 0.1 refiner the prompt and the failures as records.

/// Generated code: not ours to lint.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/archive/policy-0.1.0.wit",
        world: "refiner",
    });
}

use bindings::flywheel::policy::types::{Event, Prompt, Proposal};

/// The plugin.
struct CompatRefiner;

impl bindings::Guest for CompatRefiner {
    fn refine(prompt: Prompt, failures: Vec<Event>) -> Result<Option<Proposal>, String> {
        if failures.is_empty() {
            return Ok(None);
        }
        Ok(Some(Proposal {
            template: format!("{}\nAnswer in one sentence.", prompt.template),
            rationale: format!("{} failures of {}@{}", failures.len(), prompt.name, prompt.version),
            evidence: failures.into_iter().map(|e| e.id).collect(),
        }))
    }
}

bindings::export!(CompatRefiner with_types_in bindings);
