//! The generated WIT bindings, and the mapping between them and the host's own types.
//!
//! This is the only module that names generated types: the rest of the host speaks
//! `flywheel_model`. The three worlds share one `types` interface and one set of host
//! imports, so `router` and `refiner` reuse what `scorer` generated.

use flywheel_model as model;

/// Bindings for the `scorer` world; also the home of the shared types and imports.
pub(crate) mod scorer {
    wasmtime::component::bindgen!({
        world: "scorer",
        path: "../../wit",
    });
}

/// Bindings for the `router` world.
pub(crate) mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../../wit",
        with: {
            "flywheel:policy/types": super::scorer::flywheel::policy::types,
            "flywheel:policy/log": super::scorer::flywheel::policy::log,
            "flywheel:policy/config": super::scorer::flywheel::policy::config,
            "flywheel:policy/kv": super::scorer::flywheel::policy::kv,
        },
    });
}

/// Bindings for the `refiner` world.
pub(crate) mod refiner {
    wasmtime::component::bindgen!({
        world: "refiner",
        path: "../../wit",
        with: {
            "flywheel:policy/types": super::scorer::flywheel::policy::types,
            "flywheel:policy/log": super::scorer::flywheel::policy::log,
            "flywheel:policy/config": super::scorer::flywheel::policy::config,
            "flywheel:policy/kv": super::scorer::flywheel::policy::kv,
        },
    });
}

pub(crate) use scorer::flywheel::policy::types as wit;
pub(crate) use scorer::flywheel::policy::{config as wit_config, kv as wit_kv, log as wit_log};

/// An event converted to its WIT form once, so that every plugin that sees it
/// (all scorers, then all routers) reuses the same conversion.
#[derive(Debug, Clone)]
pub struct PreparedEvent(pub(crate) wit::Event);

impl PreparedEvent {
    /// Convert a stored event for the plugins.
    pub fn new(event: &model::Event) -> Self {
        Self(event_to_wit(event))
    }

    /// The event's id, as the plugins see it.
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

/// Scores in their WIT form, gathered from every scorer and handed to every router.
#[derive(Debug, Clone, Default)]
pub struct PreparedScores(pub(crate) Vec<wit::Score>);

impl PreparedScores {
    /// Convert host scores for the routers.
    pub fn new<'a>(scores: impl IntoIterator<Item = &'a model::Score>) -> Self {
        Self(scores.into_iter().map(score_to_wit).collect())
    }
}

pub(crate) fn event_to_wit(e: &model::Event) -> wit::Event {
    wit::Event {
        id: e.id.clone(),
        received_at: e.received_at,
        trace_id: e.trace_id.clone(),
        session_id: e.session_id.clone(),
        user_id: e.user_id.clone(),
        model: e.model.clone(),
        prompt: e.prompt.as_ref().map(|p| wit::PromptRef {
            name: p.name.clone(),
            version: p.version.clone(),
        }),
        input: e.input.clone(),
        output: e.output.clone(),
        context: e.context.clone(),
        signal: match &e.feedback {
            model::Feedback::Thumbs { value } => wit::Signal::Thumbs(match value {
                model::Thumb::Up => wit::Thumb::Up,
                model::Thumb::Down => wit::Thumb::Down,
            }),
            model::Feedback::Rating { value, scale } => wit::Signal::Rating(wit::Rating {
                value: *value,
                scale: *scale,
            }),
            model::Feedback::Correction { text } => wit::Signal::Correction(text.clone()),
            model::Feedback::Clarification { text } => wit::Signal::Clarification(text.clone()),
            model::Feedback::Comment { text } => wit::Signal::Comment(text.clone()),
            model::Feedback::None => wit::Signal::None,
        },
        metadata: e
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub(crate) fn score_to_wit(s: &model::Score) -> wit::Score {
    wit::Score {
        name: s.name.clone(),
        value: s.value,
        label: s.label.clone(),
        reason: s.reason.clone(),
    }
}

pub(crate) fn score_from_wit(s: wit::Score) -> model::Score {
    model::Score {
        name: s.name,
        value: s.value,
        label: s.label,
        reason: s.reason,
    }
}

fn target_from_wit(q: wit::QueueItem) -> model::QueueTarget {
    model::QueueTarget {
        queue: q.queue,
        priority: q.priority,
        reason: q.reason,
    }
}

pub(crate) fn route_from_wit(r: wit::Route) -> model::Route {
    match r {
        wit::Route::Accept => model::Route::Accept,
        wit::Route::Label(q) => model::Route::Label(target_from_wit(q)),
        wit::Route::Review(q) => model::Route::Review(target_from_wit(q)),
        wit::Route::Drop(reason) => model::Route::Drop { reason },
    }
}

pub(crate) fn prompt_to_wit(p: &model::Prompt) -> wit::Prompt {
    wit::Prompt {
        name: p.name.clone(),
        version: p.version.clone(),
        template: p.template.clone(),
    }
}

pub(crate) fn proposal_from_wit(p: wit::Proposal) -> model::Proposal {
    model::Proposal {
        template: p.template,
        rationale: p.rationale,
        evidence: p.evidence,
    }
}
