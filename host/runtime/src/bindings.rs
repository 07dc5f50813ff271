//! The generated WIT bindings, and the mapping between them and the host's own types.
//!
//! This is the only module that names generated types: the rest of the host speaks
//! `flywheel_model`. The three worlds of a contract version share one `types`
//! interface and one set of host imports, so `router` and `refiner` reuse what
//! `scorer` generated. Two versions are linked: `flywheel:policy@0.2.0` (the event is
//! a resource the plugin reads field by field) and, in [`v0_1`], `0.1.0` (the event is
//! a record copied whole into every call), for plugins built before 0.2.

use std::sync::Arc;

use flywheel_model as model;

/// The mappings between the host's types and one contract version's generated
/// types (the same shapes under each version's names), for the `wit` in scope.
macro_rules! conversions {
    () => {
        pub(crate) fn signal_to_wit(f: &model::Feedback) -> wit::Signal {
            match f {
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
    };
}
use conversions;

/// The three worlds of one contract version (the WIT file `$path`): `scorer` generates
/// the shared types and imports, with `$options` (e.g. how a resource maps to a host
/// type); `router` and `refiner` reuse them.
macro_rules! worlds {
    // A world whose types and imports `scorer` (a sibling module) generated.
    (@reuse $world:literal, $path:literal) => {
        wasmtime::component::bindgen!({
            world: $world,
            path: $path,
            with: {
                "flywheel:policy/types": super::scorer::flywheel::policy::types,
                "flywheel:policy/log": super::scorer::flywheel::policy::log,
                "flywheel:policy/config": super::scorer::flywheel::policy::config,
                "flywheel:policy/kv": super::scorer::flywheel::policy::kv,
            },
        });
    };
    ($path:literal $(, $($options:tt)*)?) => {
        /// Bindings for the `scorer` world; also the home of the shared types and imports.
        pub(crate) mod scorer {
            wasmtime::component::bindgen!({
                world: "scorer",
                path: $path,
                $($($options)*)?
            });
        }

        /// Bindings for the `router` world.
        pub(crate) mod router {
            worlds!(@reuse "router", $path);
        }

        /// Bindings for the `refiner` world.
        pub(crate) mod refiner {
            worlds!(@reuse "refiner", $path);
        }

        pub(crate) use scorer::flywheel::policy::types as wit;
        pub(crate) use scorer::flywheel::policy::{
            config as wit_config, kv as wit_kv, log as wit_log,
        };
    };
}

worlds!(
    "../../wit/policy.wit",
    with: {
        "flywheel:policy/types.event": super::EventHandle,
    },
    // A handle the host did not lend traps the guest.
    imports: { "flywheel:policy/types": trappable },
);

/// The 0.1.0 contract, frozen in `wit/archive/`: plugins built against it still load
/// and run; new plugins get 0.2.
pub(crate) mod v0_1 {
    use super::model;

    worlds!("../../wit/archive/policy-0.1.0.wit");

    /// The whole event as a 0.1 record.
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
            signal: signal_to_wit(&e.feedback),
            metadata: e
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    super::conversions!();
}

/// What a plugin's `event` handle points at in the host: the stored event, shared by
/// every plugin that sees it (no copy per plugin).
pub struct EventHandle(pub(crate) Arc<model::Event>);

/// An event ready to be handed to plugins: shared, so that every plugin that sees it
/// (all scorers, then all routers) reads the same copy, and converted to a 0.1 record
/// only if a 0.1 plugin asks for it.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub(crate) event: Arc<model::Event>,
    legacy: std::sync::OnceLock<Arc<v0_1::wit::Event>>,
}

impl PreparedEvent {
    /// Prepare a stored event for the plugins (one copy).
    pub fn new(event: &model::Event) -> Self {
        Self::shared(Arc::new(event.clone()))
    }

    /// Prepare an event that is already shared (no copy).
    pub fn shared(event: Arc<model::Event>) -> Self {
        Self {
            event,
            legacy: std::sync::OnceLock::new(),
        }
    }

    /// The event's id, as the plugins see it.
    pub fn id(&self) -> &str {
        &self.event.id
    }

    /// The 0.1 record of the event, made on first use.
    pub(crate) fn legacy(&self) -> &v0_1::wit::Event {
        self.legacy
            .get_or_init(|| Arc::new(v0_1::event_to_wit(&self.event)))
    }
}

/// Scores in their WIT form, gathered from every scorer and handed to every router.
#[derive(Debug, Clone, Default)]
pub struct PreparedScores {
    pub(crate) scores: Vec<wit::Score>,
    legacy: std::sync::OnceLock<Vec<v0_1::wit::Score>>,
}

impl PreparedScores {
    /// Convert host scores for the routers.
    pub fn new<'a>(scores: impl IntoIterator<Item = &'a model::Score>) -> Self {
        Self {
            scores: scores.into_iter().map(score_to_wit).collect(),
            legacy: std::sync::OnceLock::new(),
        }
    }

    /// The scores as 0.1 records, made on first use.
    pub(crate) fn legacy(&self) -> &[v0_1::wit::Score] {
        self.legacy.get_or_init(|| {
            self.scores
                .iter()
                .map(|s| v0_1::score_to_wit(&score_from_wit(s.clone())))
                .collect()
        })
    }
}

conversions!();
