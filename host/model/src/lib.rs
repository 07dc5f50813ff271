//! The data Flywheel stores, serves over HTTP and hands to plugins, as plain serde types.
//!
//! These types are the host's own: the runtime maps them to and from the generated WIT
//! types in one place (`flywheel_runtime::bindings`), the store persists them as JSON, and
//! the API serves them. Nothing here knows about wasm, sled or HTTP.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which prompt template produced an answer, as the application named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRef {
    pub name: String,
    pub version: String,
}

/// A thumbs-up or thumbs-down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Thumb {
    Up,
    Down,
}

/// What the user told us about an answer. Tagged by `type` on the wire, so that an
/// unknown kind of feedback is a clear error rather than a silent `none`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feedback {
    Thumbs {
        value: Thumb,
    },
    /// `value` in `1 ..= scale`.
    Rating {
        value: f64,
        scale: f64,
    },
    /// The text of a better answer.
    Correction {
        text: String,
    },
    /// The user's follow-up question: a sign the answer missed.
    Clarification {
        text: String,
    },
    Comment {
        text: String,
    },
    None,
}

impl Feedback {
    /// The wire name of the feedback type, used in filters and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Feedback::Thumbs { .. } => "thumbs",
            Feedback::Rating { .. } => "rating",
            Feedback::Correction { .. } => "correction",
            Feedback::Clarification { .. } => "clarification",
            Feedback::Comment { .. } => "comment",
            Feedback::None => "none",
        }
    }
}

/// One piece of feedback on one LLM answer, as accepted and stored by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The client's id, or a ULID assigned by the host.
    pub id: String,
    /// When the host accepted the event, in milliseconds since the Unix epoch.
    pub received_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptRef>,
    pub input: String,
    pub output: String,
    #[serde(default)]
    pub context: Vec<String>,
    pub feedback: Feedback,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A grade produced by a scorer: `value` is always in `0.0 ..= 1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where a router wants a person to look at an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTarget {
    pub queue: String,
    /// 0 ..= 100, higher first.
    pub priority: u8,
    pub reason: String,
}

/// A router's vote, and the pipeline's final decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Route {
    Accept,
    Label(QueueTarget),
    Review(QueueTarget),
    Drop { reason: String },
}

impl Route {
    /// The wire name of the action, used in filters and metrics labels.
    pub fn action(&self) -> &'static str {
        match self {
            Route::Accept => "accept",
            Route::Label(_) => "label",
            Route::Review(_) => "review",
            Route::Drop { .. } => "drop",
        }
    }

    /// How cautious a route is: when routers disagree the most cautious wins.
    /// Drop ranks lowest because it wins only when every router drops.
    pub fn caution(&self) -> u8 {
        match self {
            Route::Drop { .. } => 0,
            Route::Accept => 1,
            Route::Label(_) => 2,
            Route::Review(_) => 3,
        }
    }

    /// The queue a person should see this in, if any.
    pub fn queue(&self) -> Option<&QueueTarget> {
        match self {
            Route::Label(t) | Route::Review(t) => Some(t),
            Route::Accept | Route::Drop { .. } => None,
        }
    }

    /// Whether two routes send an event to the same place: the same action and queue.
    /// What shadow agreement and replay compare: a priority or a reason worded
    /// differently is not a different decision.
    pub fn same_destination(&self, other: &Route) -> bool {
        self.action() == other.action()
            && self.queue().map(|t| &t.queue) == other.queue().map(|t| &t.queue)
    }
}

/// A prompt template as handed to a refiner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub name: String,
    pub version: String,
    pub template: String,
}

/// A refiner's suggested new template; never applied without an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub template: String,
    pub rationale: String,
    pub evidence: Vec<String>,
}

/// The three kinds of policy plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Scorer,
    Router,
    Refiner,
}

impl PluginKind {
    /// The WIT world's name, which is also the manifest's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Scorer => "scorer",
            PluginKind::Router => "router",
            PluginKind::Refiner => "refiner",
        }
    }

    /// The one function a component of this kind must export.
    pub fn export_name(self) -> &'static str {
        match self {
            PluginKind::Scorer => "score",
            PluginKind::Router => "route",
            PluginKind::Refiner => "refine",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the pipeline does when a plugin call fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Ignore the plugin's vote (and scores) for this event.
    #[default]
    FailOpen,
    /// Send the event to review, because the policy could not vouch for it.
    FailClosed,
}

/// Identifies one exact plugin build: results name it so a decision can be traced to code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PluginRef {
    pub name: String,
    /// The manifest's version string, for people.
    pub version: String,
    /// BLAKE3 of the component's bytes and its manifest, hex: the identity of a
    /// version (the same code with another config is another version).
    pub hash: String,
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.hash.get(..12).unwrap_or(&self.hash);
        write!(f, "{}@{} ({short})", self.name, self.version)
    }
}

/// Why a plugin call failed, classified so that operators can tell a slow policy
/// from a buggy one from a hostile one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The wall-clock deadline passed.
    Timeout,
    /// The plugin tried to grow its memory past its cap.
    OutOfMemory,
    /// The plugin trapped: a panic, a stack overflow, an unreachable.
    Trap,
    /// The plugin returned `err(...)`.
    PluginError,
    /// The plugin returned something the host refuses: too big, or out of range.
    InvalidResult,
    /// The plugin could not be run at all (e.g. instantiation failed).
    Unavailable,
}

impl ErrorClass {
    /// Every class, in a fixed order: what counters and stored codes index by.
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::Timeout,
        ErrorClass::OutOfMemory,
        ErrorClass::Trap,
        ErrorClass::PluginError,
        ErrorClass::InvalidResult,
        ErrorClass::Unavailable,
    ];

    /// The class's position in [`ErrorClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The wire name, used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::OutOfMemory => "out_of_memory",
            ErrorClass::Trap => "trap",
            ErrorClass::PluginError => "plugin_error",
            ErrorClass::InvalidResult => "invalid_result",
            ErrorClass::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed plugin call, as recorded beside the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    pub class: ErrorClass,
    pub message: String,
}

/// One plugin call made while processing an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Shared: every call of a plugin version names the same build.
    pub plugin: Arc<PluginRef>,
    pub kind: PluginKind,
    /// Wall-clock time of the call, in microseconds.
    pub duration_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CallError>,
    /// The failure mode applied when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
}

/// A score together with the plugin that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub plugin: String,
    #[serde(flatten)]
    pub score: Score,
}

/// A router's vote together with the router that cast it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub plugin: String,
    pub route: Route,
    /// True when the vote was imposed by a fail-closed failure, not cast by the plugin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imposed: bool,
}

/// What the pipeline decided for one event, stored beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Every score from every scorer that succeeded.
    pub scores: Vec<ScoreRecord>,
    /// Every router's vote, including votes imposed by fail-closed failures.
    pub votes: Vec<Vote>,
    /// The final route: the most cautious vote.
    pub route: Route,
    /// Every plugin call, in order, with its cost and any error.
    pub calls: Vec<CallRecord>,
    /// The exact plugin builds that processed the event (shared by every outcome of one
    /// plugin set).
    pub plugins: Arc<[PluginRef]>,
    /// When processing finished, in milliseconds since the Unix epoch.
    pub processed_at: u64,
    /// What shadow candidates would have decided: recorded, never routed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowRun>,
}

/// One shadow candidate's view of an event: the scores and votes it changed and the
/// route the pipeline would have taken with it instead of the live version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowRun {
    pub candidate: PluginRef,
    /// The live version it runs beside, if the plugin has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<PluginRef>,
    /// The candidate's own scores (for a scorer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<Score>,
    /// Every vote with the candidate in place.
    pub votes: Vec<Vote>,
    pub route: Route,
    /// Whether `route` equals the live route.
    pub agrees: bool,
    /// The calls the shadow run made (the candidate's, and routers' re-runs).
    pub calls: Vec<CallRecord>,
}

/// An event together with what the pipeline made of it (if it has run yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(flatten)]
    pub event: Event,
    /// `pending` until the pipeline has run, then `processed`.
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// People's reviews from the queues, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<Review>,
    /// The answer the event should have had, derived by [`Correction::effective`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
}

/// A reviewer's decision on a queued answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    /// The wire name, used in audit entries and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// A person's review of a queued answer. Stored with the event too: a review is feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub queue: String,
    pub item_id: String,
    /// Who reviewed: the token's name.
    pub reviewer: String,
    pub verdict: Verdict,
    /// 1 ..= 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The answer the model should have given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub reviewed_at: u64,
}

/// Who supplied an event's correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionSource {
    /// A reviewer, on a queue.
    Review,
    /// The user, as `correction` feedback.
    Feedback,
}

/// The better answer for an event, whoever gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub text: String,
    pub source: CorrectionSource,
    /// The reviewer, when `source` is `review`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
}

impl Correction {
    /// The latest reviewer's correction, else the user's own correction feedback.
    pub fn effective(event: &Event, reviews: &[Review]) -> Option<Correction> {
        let reviewed = reviews.iter().rev().find_map(|r| {
            let text = r.corrected_output.as_ref()?;
            Some(Correction {
                text: text.clone(),
                source: CorrectionSource::Review,
                reviewer: Some(r.reviewer.clone()),
            })
        });
        reviewed.or_else(|| match &event.feedback {
            Feedback::Correction { text } => Some(Correction {
                text: text.clone(),
                source: CorrectionSource::Feedback,
                reviewer: None,
            }),
            _ => None,
        })
    }
}

/// Whether the pipeline has processed an event yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Pending,
    Processed,
}

/// Milliseconds since the Unix epoch, the one clock every record uses.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_agree_on_where_an_event_goes_not_on_wording() {
        let label = |queue: &str, priority: u8, reason: &str| {
            super::Route::Label(super::QueueTarget {
                queue: queue.into(),
                priority,
                reason: reason.into(),
            })
        };
        let sampled = label("qa", 5, "QA sample: 5.0%");
        assert!(sampled.same_destination(&label("qa", 9, "QA sample: 20.0%")));
        assert!(!sampled.same_destination(&label("labeling", 5, "QA sample: 5.0%")));
        let review = super::Route::Review(super::QueueTarget {
            queue: "qa".into(),
            priority: 5,
            reason: String::new(),
        });
        assert!(!sampled.same_destination(&review));
        let dropped = |reason: &str| super::Route::Drop {
            reason: reason.into(),
        };
        assert!(dropped("spam").same_destination(&dropped("duplicate")));
        assert!(!dropped("spam").same_destination(&super::Route::Accept));
    }

    use super::*;

    #[test]
    fn feedback_is_tagged_by_type() {
        let f: Feedback = serde_json::from_str(r#"{"type":"rating","value":4,"scale":5}"#)
            .expect("rating parses");
        assert_eq!(
            f,
            Feedback::Rating {
                value: 4.0,
                scale: 5.0
            }
        );
        let err = serde_json::from_str::<Feedback>(r#"{"type":"emoji","value":"x"}"#)
            .expect_err("unknown type");
        assert!(err.to_string().contains("emoji"), "{err}");
    }

    #[test]
    fn routes_rank_by_caution() {
        let t = QueueTarget {
            queue: "q".into(),
            priority: 1,
            reason: "r".into(),
        };
        assert!(Route::Review(t.clone()).caution() > Route::Label(t).caution());
        assert!(Route::Accept.caution() > Route::Drop { reason: "x".into() }.caution());
        let json = serde_json::to_value(Route::Drop {
            reason: "spam".into(),
        })
        .expect("ser");
        assert_eq!(
            json,
            serde_json::json!({"action": "drop", "reason": "spam"})
        );
    }

    #[test]
    fn the_latest_reviewer_correction_wins_over_the_users() {
        let mut event: Event = serde_json::from_value(serde_json::json!({
            "id": "e", "received_at": 1, "input": "q", "output": "a",
            "feedback": {"type": "correction", "text": "from the user"},
        }))
        .expect("event");
        let user = Correction::effective(&event, &[]).expect("the user's correction");
        assert_eq!(
            (user.text.as_str(), user.source),
            ("from the user", CorrectionSource::Feedback)
        );
        let review = |who: &str, text: Option<&str>| Review {
            queue: "q".into(),
            item_id: "i".into(),
            reviewer: who.into(),
            verdict: Verdict::Reject,
            rating: None,
            tags: vec![],
            corrected_output: text.map(Into::into),
            note: None,
            reviewed_at: 2,
        };
        let reviews = [
            review("ann", Some("from ann")),
            review("bo", Some("from bo")),
            review("cy", None),
        ];
        let latest = Correction::effective(&event, &reviews).expect("a reviewer's correction");
        assert_eq!(
            (latest.text.as_str(), latest.reviewer.as_deref()),
            ("from bo", Some("bo"))
        );
        event.feedback = Feedback::None;
        assert_eq!(Correction::effective(&event, &[]), None);
    }

    #[test]
    fn error_classes_index_their_place_in_all() {
        // Stored outcomes keep the index: the order must never change.
        for (i, c) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c}");
        }
        assert_eq!(ErrorClass::ALL[5], ErrorClass::Unavailable);
    }
}
