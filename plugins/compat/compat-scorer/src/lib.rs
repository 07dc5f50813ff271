//! Compatibility fixture: a scorer built against `flywheel:policy@0.1.0` (the event
//! as one record), with wit-bindgen and no SDK, as a plugin compiled before 0.2 is.
//!
//! Why: the host promises to keep running plugins built against an older contract
//! version; this proves every field of the 0.1 record arrives, and that the 0.1
//! `log`, `config` and `kv` imports work.

/// Generated code: not ours to lint.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/archive/policy-0.1.0.wit",
        world: "scorer",
    });
}

use bindings::flywheel::policy::types::{Event, Score, Signal};
use bindings::flywheel::policy::{config, kv, log};

/// The plugin.
struct CompatScorer;

impl bindings::Guest for CompatScorer {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        let tag = config::get("tag").unwrap_or_default();
        log::log(log::Level::Info, &format!("compat-scorer saw {}", event.id));
        let seen = kv::get("seen").map_or(0, |v| v.len()) + 1;
        kv::set("seen", &vec![0; seen]).map_err(|e| format!("kv: {e:?}"))?;
        let signal = match &event.signal {
            Signal::Thumbs(_) => "thumbs",
            Signal::Rating(_) => "rating",
            Signal::Correction(_) => "correction",
            Signal::Clarification(_) => "clarification",
            Signal::Comment(_) => "comment",
            Signal::None => "none",
        };
        Ok(vec![Score {
            name: "compat".into(),
            value: (event.output.len() as f64 / 1000.0).min(1.0),
            label: Some(tag),
            reason: Some(format!(
                "id={} input={} context={} signal={} prompt={} metadata={} calls={seen}",
                event.id,
                event.input.len(),
                event.context.len(),
                signal,
                event
                    .prompt
                    .map(|p| format!("{}@{}", p.name, p.version))
                    .unwrap_or_default(),
                event.metadata.len(),
            )),
        }])
    }
}

bindings::export!(CompatScorer with_types_in bindings);
