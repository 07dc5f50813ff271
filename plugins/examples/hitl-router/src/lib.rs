//! `hitl-router`: decides which answers a person should look at, from the
//! scores of the `sensitive`, `satisfaction` and `groundedness` scorers.
//!
//! In order, first match wins:
//!
//! 1. `sensitive ≥ sensitive-threshold` (0.5) → **review** in the
//!    `compliance` queue. Priority: PII (label contains `pii:`) is served
//!    first, `50 + 50 × sensitive` (95 at 0.9); a regulated topic only gets
//!    `50 × sensitive` (30 at 0.6), so every PII item outranks every topic
//!    item.
//! 2. `satisfaction < satisfaction-threshold` (0.5) or `groundedness <
//!    groundedness-threshold` (0.6) → **label** in the `labeling` queue, with
//!    the priority described below.
//! 3. A deterministic sample of the rest, `qa-sample-rate` (5%), chosen by
//!    `stable_hash(event.id)` (via `text::stable_fraction`) so a replay routes the same events → **label**
//!    in the `qa` queue at priority 5.
//! 4. Otherwise **accept**.
//!
//! A missing score is *unknown*: it never triggers a rule by itself and
//! never counts as a failure. If a score appears several times (several
//! scorers), the most cautious one is used (max `sensitive`, min of the
//! others).
//!
//! ## Labelling priority: most informative first
//!
//! `priority = min(100, signal + disagreement + uncertainty)`:
//!
//! * **signal** (what the label will be built from): a correction (35)
//!   already contains the better answer; a clarification (30) says what was
//!   missing; a rating (20) or a comment (15) is graded; a bare thumb (10)
//!   is one bit; no signal (5).
//! * **disagreement** (the scorers contradict each other, so at least one
//!   of them is wrong and a label settles which): the user was satisfied
//!   but the answer looks ungrounded, +40 (a hallucination the user did not
//!   notice, the most valuable catch); the user was unhappy with a grounded
//!   answer, +25 (retrieval or the prompt, not the model, is likely at
//!   fault).
//! * **uncertainty** (how close the failing score is to its threshold: an
//!   item just under the line is one the policy is least sure about, a 0.0
//!   is a clear-cut failure): `20 × value / threshold` for the failing score
//!   nearest its threshold.

use flywheel_plugin::{Event, QueueItem, Route, Router, Score, Signal, config, text};

/// The plugin type exported to the host.
pub struct HitlRouter;

impl Router for HitlRouter {
    fn route(event: Event, scores: Vec<Score>) -> Result<Route, String> {
        let settings = SETTINGS.with(|m| m.get_or_init(Settings::from_config));
        Ok(decide(&event, &scores, &settings))
    }
}

thread_local! {
    /// The config, parsed once per instance.
    static SETTINGS: config::Memo<Settings> = const { config::Memo::new() };
}

flywheel_plugin::export_router!(HitlRouter);

/// Tunables read from the manifest's `[config]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Review at or above this `sensitive` value (default 0.5).
    pub sensitive_threshold: f64,
    /// Label below this `satisfaction` value (default 0.5).
    pub satisfaction_threshold: f64,
    /// Label below this `groundedness` value (default 0.6).
    pub groundedness_threshold: f64,
    /// Fraction of accepted traffic sent to QA (default 0.05).
    pub qa_sample_rate: f64,
    /// Queue for reviews (default `compliance`).
    pub compliance_queue: String,
    /// Queue for labelling (default `labeling`).
    pub labeling_queue: String,
    /// Queue for the QA sample (default `qa`).
    pub qa_queue: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sensitive_threshold: 0.5,
            satisfaction_threshold: 0.5,
            groundedness_threshold: 0.6,
            qa_sample_rate: 0.05,
            compliance_queue: "compliance".into(),
            labeling_queue: "labeling".into(),
            qa_queue: "qa".into(),
        }
    }
}

impl Settings {
    /// Read the settings, falling back to the defaults.
    pub fn from_config() -> Self {
        let d = Settings::default();
        let queue = |key: &str, default: String| config::get(key).filter(|q| !q.trim().is_empty()).unwrap_or(default);
        Settings {
            sensitive_threshold: config::get_f64("sensitive-threshold", d.sensitive_threshold).clamp(0.0, 1.0),
            satisfaction_threshold: config::get_f64("satisfaction-threshold", d.satisfaction_threshold).clamp(0.0, 1.0),
            groundedness_threshold: config::get_f64("groundedness-threshold", d.groundedness_threshold).clamp(0.0, 1.0),
            qa_sample_rate: config::get_f64("qa-sample-rate", d.qa_sample_rate).clamp(0.0, 1.0),
            compliance_queue: queue("compliance-queue", d.compliance_queue),
            labeling_queue: queue("labeling-queue", d.labeling_queue),
            qa_queue: queue("qa-queue", d.qa_queue),
        }
    }
}

/// Priority of QA-sample items: served when nothing else is waiting.
pub const QA_PRIORITY: u8 = 5;

/// The most cautious value of the score `name` (`max` for `sensitive`,
/// `min` otherwise), ignoring non-finite values; `None` if absent.
fn find<'a>(scores: &'a [Score], name: &str, most_cautious_is_max: bool) -> Option<&'a Score> {
    scores
        .iter()
        .filter(|s| s.name == name && s.value.is_finite())
        .reduce(|a, b| {
            let b_wins = if most_cautious_is_max {
                b.value > a.value
            } else {
                b.value < a.value
            };
            if b_wins { b } else { a }
        })
}

/// Route one event (see the crate docs for the rules).
pub fn decide(event: &Event, scores: &[Score], settings: &Settings) -> Route {
    let sensitive = find(scores, "sensitive", true);
    let satisfaction = find(scores, "satisfaction", false).map(|s| s.value);
    let groundedness = find(scores, "groundedness", false).map(|s| s.value);

    if let Some(s) = sensitive.filter(|s| s.value >= settings.sensitive_threshold) {
        let label = s.label.as_deref().unwrap_or("");
        let pii = label.split(',').any(|l| l.trim().starts_with("pii:"));
        let priority = if pii { 50.0 + 50.0 * s.value } else { 50.0 * s.value };
        let mut reason = format!(
            "sensitive {} ≥ threshold {}",
            text::fixed(s.value, 2),
            text::fixed(settings.sensitive_threshold, 2)
        );
        if !label.is_empty() {
            reason.push_str(&format!(" ({label})"));
        }
        if let Some(why) = &s.reason {
            reason.push_str(&format!(": {why}"));
        }
        return Route::Review(QueueItem::new(
            &settings.compliance_queue,
            to_priority(priority),
            reason,
        ));
    }

    let sat_fail = satisfaction.filter(|&v| v < settings.satisfaction_threshold);
    let gnd_fail = groundedness.filter(|&v| v < settings.groundedness_threshold);
    if sat_fail.is_some() || gnd_fail.is_some() {
        let mut why = Vec::new();
        if let Some(v) = sat_fail {
            why.push(format!(
                "satisfaction {} < threshold {}",
                text::fixed(v, 2),
                text::fixed(settings.satisfaction_threshold, 2)
            ));
        }
        if let Some(v) = gnd_fail {
            why.push(format!(
                "groundedness {} < threshold {}",
                text::fixed(v, 2),
                text::fixed(settings.groundedness_threshold, 2)
            ));
        }
        let (priority, notes) = labeling_priority(event.signal(), satisfaction, groundedness, settings);
        let mut reason = why.join("; ");
        if !notes.is_empty() {
            reason.push_str(&format!(" ({})", notes.join(", ")));
        }
        return Route::Label(QueueItem::new(&settings.labeling_queue, priority, reason));
    }

    if in_qa_sample(event.id(), settings.qa_sample_rate) {
        let reason = format!(
            "QA sample: {}% of accepted traffic, chosen by event id",
            text::fixed(settings.qa_sample_rate * 100.0, 1)
        );
        return Route::Label(QueueItem::new(&settings.qa_queue, QA_PRIORITY, reason));
    }
    Route::Accept
}

/// Whether `id` falls in the QA sample: `text::stable_fraction(id) < rate`
/// (FNV-1a of the id, mixed). Reproducible on replay, and independent of
/// arrival order or of other events.
pub fn in_qa_sample(id: &str, rate: f64) -> bool {
    text::stable_fraction(id) < rate
}

/// The labelling priority and the notes explaining it (see the crate docs).
pub fn labeling_priority(
    signal: &Signal,
    satisfaction: Option<f64>,
    groundedness: Option<f64>,
    settings: &Settings,
) -> (u8, Vec<String>) {
    let mut notes = Vec::new();
    let base = match signal {
        Signal::Correction(_) => 35.0,
        Signal::Clarification(_) => 30.0,
        Signal::Rating(_) => 20.0,
        Signal::Comment(_) => 15.0,
        Signal::Thumbs(_) => 10.0,
        Signal::None => 5.0,
    };
    if matches!(signal, Signal::Correction(_) | Signal::Clarification(_)) {
        notes.push(format!("has a {}", signal.kind()));
    }
    let mut disagreement = 0.0;
    if let (Some(sat), Some(gnd)) = (satisfaction, groundedness) {
        let satisfied = sat >= settings.satisfaction_threshold;
        let grounded = gnd >= settings.groundedness_threshold;
        if satisfied && !grounded {
            disagreement = 40.0;
            notes.push("user satisfied but answer looks ungrounded".into());
        } else if !satisfied && grounded {
            disagreement = 25.0;
            notes.push("answer grounded but user unhappy".into());
        }
    }
    let closeness = |value: Option<f64>, threshold: f64| {
        value
            .filter(|&v| v < threshold && threshold > 0.0)
            .map(|v| (v / threshold).clamp(0.0, 1.0))
    };
    let uncertainty = closeness(satisfaction, settings.satisfaction_threshold)
        .into_iter()
        .chain(closeness(groundedness, settings.groundedness_threshold))
        .fold(0.0, f64::max);
    if uncertainty >= 0.75 {
        notes.push("close to the threshold".into());
    }
    (to_priority(base + disagreement + 20.0 * uncertainty), notes)
}

fn to_priority(p: f64) -> u8 {
    p.round().clamp(0.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_plugin::{EventData, Thumb, testing};

    fn event(id: &str, signal: Signal) -> Event {
        EventData {
            id: id.into(),
            input: "Can I take ibuprofen with my blood pressure pills?".into(),
            output: "Yes, 400 mg is fine.".into(),
            signal,
            ..EventData::default()
        }
        .into()
    }

    fn s(name: &str, value: f64, label: Option<&str>) -> Score {
        let mut score = Score::new(name, value);
        score.label = label.map(Into::into);
        score
    }

    fn route(signal: Signal, scores: &[Score]) -> Route {
        HitlRouter::route(event("01J00000000000000000000003", signal), scores.to_vec()).expect("ok")
    }

    fn item(route: Route) -> (&'static str, QueueItem) {
        match route {
            Route::Review(q) => ("review", q),
            Route::Label(q) => ("label", q),
            other => panic!("expected a queue item, got {other:?}"),
        }
    }

    #[test]
    fn sensitive_goes_to_compliance_with_pii_first() {
        let (kind, pii) = item(route(
            Signal::None,
            &[s("sensitive", 0.9, Some("pii:email,topic:medical"))],
        ));
        assert_eq!((kind, pii.queue.as_str(), pii.priority), ("review", "compliance", 95));
        assert!(pii.reason.contains("sensitive 0.90 ≥ threshold 0.50"), "{}", pii.reason);
        let (_, topic) = item(route(Signal::None, &[s("sensitive", 0.7, Some("topic:medical"))]));
        assert!(topic.priority < pii.priority && topic.priority == 35);
        // Review wins over a low satisfaction.
        let (kind, _) = item(route(
            Signal::Thumbs(Thumb::Down),
            &[s("sensitive", 0.6, Some("topic:legal")), s("satisfaction", 0.0, None)],
        ));
        assert_eq!(kind, "review");
        // The most cautious of two sensitive scores counts.
        let (kind, _) = item(route(
            Signal::None,
            &[s("sensitive", 0.0, None), s("sensitive", 0.6, Some("topic:legal"))],
        ));
        assert_eq!(kind, "review");
    }

    #[test]
    fn low_quality_goes_to_labeling() {
        let (kind, q) = item(route(
            Signal::Thumbs(Thumb::Down),
            &[s("satisfaction", 0.0, None), s("sensitive", 0.0, None)],
        ));
        assert_eq!((kind, q.queue.as_str()), ("label", "labeling"));
        assert!(q.reason.contains("satisfaction 0.00 < threshold 0.50"), "{}", q.reason);
        assert_eq!(q.priority, 10);
        let (_, q) = item(route(Signal::None, &[s("groundedness", 0.3, None)]));
        assert!(q.reason.contains("groundedness 0.30 < threshold 0.60"), "{}", q.reason);
    }

    #[test]
    fn informative_items_come_first() {
        let sat0 = [s("satisfaction", 0.0, None)];
        let thumb = item(route(Signal::Thumbs(Thumb::Down), &sat0)).1.priority;
        let correction = item(route(Signal::Correction("It is 200 mg.".into()), &sat0))
            .1
            .priority;
        let clarification = item(route(
            Signal::Clarification("With which pills?".into()),
            &[s("satisfaction", 0.25, None)],
        ))
        .1
        .priority;
        let disagreement = item(route(
            Signal::Thumbs(Thumb::Up),
            &[s("satisfaction", 1.0, None), s("groundedness", 0.2, None)],
        ));
        assert!(
            disagreement
                .1
                .reason
                .contains("user satisfied but answer looks ungrounded")
        );
        assert!(
            correction > thumb && clarification > thumb,
            "{correction} {clarification} {thumb}"
        );
        assert!(disagreement.1.priority > correction, "{disagreement:?} vs {correction}");
        // Near the threshold is more uncertain than a clear failure.
        let near = item(route(Signal::None, &[s("groundedness", 0.58, None)])).1.priority;
        let far = item(route(Signal::None, &[s("groundedness", 0.05, None)])).1.priority;
        assert!(near > far, "{near} {far}");
    }

    #[test]
    fn missing_scores_are_unknown_not_failures() {
        // No scores at all: never a failure; only the QA sample applies.
        testing::set_config(&[("qa-sample-rate", "0")]);
        assert_eq!(route(Signal::Thumbs(Thumb::Down), &[]), Route::Accept);
        assert_eq!(route(Signal::None, &[s("satisfaction", 0.9, None)]), Route::Accept);
        assert_eq!(route(Signal::None, &[s("sensitive", f64::NAN, None)]), Route::Accept);
    }

    #[test]
    fn qa_sample_is_deterministic_and_near_the_rate() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("01J{i:023}")).collect();
        let sampled = ids.iter().filter(|id| in_qa_sample(id, 0.05)).count();
        assert!((800..1200).contains(&sampled), "{sampled}");
        assert!(ids.iter().all(|id| in_qa_sample(id, 0.05) == in_qa_sample(id, 0.05)));
        assert!(!in_qa_sample("x", 0.0) && in_qa_sample("x", 1.0));
        let id = ids.iter().find(|id| in_qa_sample(id, 0.05)).expect("one sampled id");
        let r = HitlRouter::route(event(id, Signal::None), vec![s("satisfaction", 0.9, None)]).expect("ok");
        let (kind, q) = item(r);
        assert_eq!((kind, q.queue.as_str(), q.priority), ("label", "qa", QA_PRIORITY));
    }

    #[test]
    fn thresholds_and_queues_are_configurable() {
        testing::set_config(&[
            ("sensitive-threshold", "0.95"),
            ("satisfaction-threshold", "0.8"),
            ("labeling-queue", "triage"),
            ("compliance-queue", "legal-review"),
        ]);
        let (kind, q) = item(route(
            Signal::None,
            &[s("sensitive", 0.9, Some("pii:email")), s("satisfaction", 0.7, None)],
        ));
        assert_eq!((kind, q.queue.as_str()), ("label", "triage"));
        let (_, q) = item(route(Signal::None, &[s("sensitive", 0.96, Some("pii:card"))]));
        assert_eq!(q.queue, "legal-review");
    }
}
