//! Friendly names for the WIT types, plus small constructors and accessors.
//!
//! The types themselves are generated from `flywheel:policy/types`; the
//! inherent methods below are allowed because the generated code lives in
//! this crate.

use crate::__private::bindings::flywheel::policy::types as wit;

/// What the user told us about the answer (WIT `signal`).
pub type Signal = wit::Signal;
/// A thumbs-up or thumbs-down (WIT `thumb`).
pub type Thumb = wit::Thumb;
/// A star-style rating, `value` in `1.0..=scale` (WIT `rating`).
pub type Rating = wit::Rating;
/// A grade produced by a scorer (WIT `score`).
pub type Score = wit::Score;
/// A router's vote (WIT `route`).
pub type Route = wit::Route;
/// Where a router wants a human to look (WIT `queue-item`).
pub type QueueItem = wit::QueueItem;
/// A prompt template from the host's registry (WIT `prompt`).
pub type Prompt = wit::Prompt;
/// The name and version of the template behind an answer (WIT `prompt-ref`).
pub type PromptRef = wit::PromptRef;
/// A refiner's suggested template (WIT `proposal`).
pub type Proposal = wit::Proposal;

impl Score {
    /// A score with no label and no reason.
    ///
    /// Why: scores are built in every scorer; the builder methods keep that
    /// to one expression. `value` is clamped into `0.0..=1.0` (NaN becomes
    /// 0.0) because the host rejects anything else as an invalid result.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        let value = if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) };
        Score {
            name: name.into(),
            value,
            label: None,
            reason: None,
        }
    }

    /// Set the category (e.g. `pii:email`), for filtering and dashboards.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Set the human-readable explanation a reviewer will see.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl QueueItem {
    /// A queue item; `priority` is capped at 100, the contract's maximum.
    ///
    /// Why: the WIT type is a `u8`, so 101..=255 are representable but
    /// meaningless; capping here keeps every router within the contract.
    pub fn new(queue: impl Into<String>, priority: u8, reason: impl Into<String>) -> Self {
        QueueItem {
            queue: queue.into(),
            priority: priority.min(100),
            reason: reason.into(),
        }
    }
}

impl Signal {
    /// A stable, lower-case name for the kind of signal: `thumbs`, `rating`,
    /// `correction`, `clarification`, `comment` or `none`.
    ///
    /// Why: for labels, reasons and logs, without matching on the payload.
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Thumbs(_) => "thumbs",
            Signal::Rating(_) => "rating",
            Signal::Correction(_) => "correction",
            Signal::Clarification(_) => "clarification",
            Signal::Comment(_) => "comment",
            Signal::None => "none",
        }
    }

    /// The text of a correction, clarification or comment.
    ///
    /// Why: see [`Event::feedback_text`](crate::Event::feedback_text).
    pub fn text(&self) -> Option<&str> {
        match self {
            Signal::Correction(t) | Signal::Clarification(t) | Signal::Comment(t) => Some(t),
            Signal::Thumbs(_) | Signal::Rating(_) | Signal::None => None,
        }
    }
}

impl Rating {
    /// The rating mapped onto `0.0..=1.0`: `(value - 1) / (scale - 1)`,
    /// clamped; `Err` if the scale is not finite and above 1 or the value is
    /// not finite.
    ///
    /// Why: ratings arrive on any scale (5 stars, 10 points); scorers and
    /// routers compare them on one.
    pub fn normalized(&self) -> Result<f64, String> {
        if !self.scale.is_finite() || self.scale <= 1.0 {
            return Err(format!(
                "rating scale must be a finite number above 1, got {}",
                self.scale
            ));
        }
        if !self.value.is_finite() {
            return Err(format!("rating value must be a finite number, got {}", self.value));
        }
        Ok(((self.value - 1.0) / (self.scale - 1.0)).clamp(0.0, 1.0))
    }
}
