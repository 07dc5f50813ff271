//! Prompt templates: immutable numbered versions, movable labels (`production`,
//! `staging`), per-version feedback statistics, and refiner proposals.
//!
//! Applications fetch their template on every request, so reads are served from an
//! in-memory snapshot swapped with `arc-swap`; writes go to the store first. Refiners
//! run on demand or when a version collects enough new failures; a proposal is never
//! applied until an admin accepts it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use flywheel_model::{
    Event, EventRecord, Feedback, Outcome, Prompt, PromptRef, Route, Thumb, Verdict, now_ms,
};
use flywheel_store::{EventFilter, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::PromptsConfig;
use crate::pipeline::Pipeline;

const PROMPTS: &str = "prompts";
const PROPOSALS: &str = "prompt-proposals";
/// Failures handed to a refiner, newest first.
const MAX_FAILURES: usize = 50;
/// Pages of [`Store::list`] (each looks at up to `LIST_SCAN_BUDGET` events) read to find
/// a version's recent failures: what one refine may cost on a big store where the
/// version is rare or rarely fails.
const FAILURE_PAGES: usize = 5;
/// Events of the version per page while looking for failures.
const FAILURE_PAGE_EVENTS: usize = 1_000;

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    pub version: u32,
    /// Text with `{{variables}}`.
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub created_at: u64,
    pub created_by: String,
    /// The proposal this version came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_proposal: Option<String>,
}

/// A prompt name: its versions and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEntry {
    pub name: String,
    pub versions: Vec<PromptVersion>,
    /// Label → version number.
    pub labels: BTreeMap<String, u32>,
}

impl PromptEntry {
    fn get(&self, version: u32) -> Option<&PromptVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    fn latest(&self) -> Option<&PromptVersion> {
        self.versions.last()
    }
}

/// Whether a proposal is still waiting for an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Accepted,
    Rejected,
}

/// A refiner's suggestion, kept with who proposed it and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposalRecord {
    pub id: String,
    pub prompt: String,
    /// The version the refiner looked at.
    pub base_version: u32,
    pub template: String,
    pub rationale: String,
    pub evidence: Vec<String>,
    pub refiner: flywheel_model::PluginRef,
    /// `manual` or `auto` (after enough failures).
    pub trigger: String,
    pub status: ProposalStatus,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// The version created when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a prompt operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("no prompt named `{0}`")]
    NotFound(String),
    #[error("prompt `{name}` has no {what}")]
    NoSuch { name: String, what: String },
    #[error("{0}")]
    Invalid(String),
    #[error("proposal `{0}` was already decided")]
    Decided(String),
    #[error("store error: {0}")]
    Store(#[from] flywheel_store::StoreError),
}

/// A proportion with a 95% Wilson interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub count: u64,
    pub total: u64,
    pub rate: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

impl Rate {
    /// Wilson score interval: honest for small counts and rates near 0 or 1.
    pub fn new(count: u64, total: u64) -> Self {
        if total == 0 {
            return Self {
                count,
                total,
                rate: None,
                ci95: None,
            };
        }
        let (n, p, z) = (total as f64, count as f64 / total as f64, 1.96f64);
        let denom = 1.0 + z * z / n;
        let center = (p + z * z / (2.0 * n)) / denom;
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
        Self {
            count,
            total,
            rate: Some(p),
            ci95: Some([(center - half).max(0.0), (center + half).min(1.0)]),
        }
    }
}

/// A mean with a 95% normal interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mean {
    pub count: u64,
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

impl Mean {
    pub fn new(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                count: 0,
                mean: None,
                ci95: None,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = (n > 1).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let half = 1.96 * (var / n as f64).sqrt();
            [(mean - half).max(0.0), (mean + half).min(1.0)]
        });
        Self {
            count: n as u64,
            mean: Some(mean),
            ci95,
        }
    }
}

/// Feedback statistics for one prompt version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStats {
    pub version: String,
    pub events: u64,
    /// Mean of the `satisfaction` score, over events that have one.
    pub satisfaction: Mean,
    /// Thumbs-up among thumbs feedback.
    pub thumbs_up: Rate,
    /// Events with a correction (the user's, or a reviewer's).
    pub corrections: Rate,
    /// Processed events routed to a person (a label or review queue).
    pub reviews: Rate,
}

/// Whether an event counts as a failure of its prompt: low satisfaction, a
/// correction, a clarification, or a rejected review.
pub fn is_failure(
    event: &Event,
    outcome: Option<&Outcome>,
    reviews: &[flywheel_model::Review],
) -> bool {
    matches!(
        event.feedback,
        Feedback::Correction { .. } | Feedback::Clarification { .. }
    ) || reviews.iter().any(|r| r.verdict == Verdict::Reject)
        || outcome.is_some_and(|o| {
            o.scores
                .iter()
                .any(|s| s.score.name == "satisfaction" && s.score.value < 0.5)
        })
}

/// Compute per-version statistics from stored events of one prompt name.
pub fn stats(records: impl Iterator<Item = EventRecord>) -> Vec<VersionStats> {
    #[derive(Default)]
    struct Acc {
        events: u64,
        satisfaction: Vec<f64>,
        thumbs: (u64, u64),
        corrections: u64,
        processed: u64,
        routed: u64,
    }
    let mut by_version: BTreeMap<String, Acc> = BTreeMap::new();
    for r in records {
        let Some(p) = &r.event.prompt else { continue };
        let acc = by_version.entry(p.version.clone()).or_default();
        acc.events += 1;
        if let Feedback::Thumbs { value } = r.event.feedback {
            acc.thumbs.1 += 1;
            if value == Thumb::Up {
                acc.thumbs.0 += 1;
            }
        }
        if r.correction.is_some() || matches!(r.event.feedback, Feedback::Correction { .. }) {
            acc.corrections += 1;
        }
        if let Some(o) = &r.outcome {
            acc.processed += 1;
            if matches!(o.route, Route::Label(_) | Route::Review(_)) {
                acc.routed += 1;
            }
            if let Some(s) = o.scores.iter().find(|s| s.score.name == "satisfaction") {
                acc.satisfaction.push(s.score.value);
            }
        }
    }
    let mut out: Vec<VersionStats> = by_version
        .into_iter()
        .map(|(version, a)| VersionStats {
            version,
            events: a.events,
            satisfaction: Mean::new(&a.satisfaction),
            thumbs_up: Rate::new(a.thumbs.0, a.thumbs.1),
            corrections: Rate::new(a.corrections, a.events),
            reviews: Rate::new(a.routed, a.processed),
        })
        .collect();
    // Numeric versions in numeric order ("10" after "9").
    out.sort_by(
        |a, b| match (a.version.parse::<u64>(), b.version.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.version.cmp(&b.version),
        },
    );
    out
}

/// A unified line diff from the base template to a proposal.
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// What a new version is made of.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub template: String,
    pub model_settings: Option<Value>,
    pub notes: Option<String>,
    /// Labels to point at the new version.
    pub labels: Vec<String>,
    /// Who created it.
    pub actor: String,
    /// The proposal it came from, if any.
    pub from_proposal: Option<String>,
}

/// The prompt registry.
pub struct Prompts {
    store: Store,
    pipeline: Pipeline,
    snapshot: ArcSwap<HashMap<String, Arc<PromptEntry>>>,
    write: Mutex<()>,
    /// Failures since the last automatic refine, per (name, version).
    failures: Mutex<HashMap<(String, String), AutoRefine>>,
    refine_after: u64,
    refine_min_interval: Duration,
}

/// One prompt version's way to its next automatic refine.
#[derive(Debug, Default)]
struct AutoRefine {
    /// Failures counted since the last one.
    failures: u64,
    /// When the last one ran.
    last: Option<Instant>,
}

impl Prompts {
    /// Load every prompt from the store into memory.
    pub fn open(
        store: Store,
        pipeline: Pipeline,
        config: &PromptsConfig,
    ) -> Result<Self, PromptError> {
        let mut map = HashMap::new();
        for (name, bytes) in store.meta_scan_prefix(PROMPTS, "")? {
            match serde_json::from_slice::<PromptEntry>(&bytes) {
                Ok(e) => {
                    map.insert(name, Arc::new(e));
                }
                Err(e) => tracing::error!(prompt = %name, "ignoring unreadable prompt: {e}"),
            }
        }
        Ok(Self {
            store,
            pipeline,
            snapshot: ArcSwap::from_pointee(map),
            write: Mutex::new(()),
            failures: Mutex::new(HashMap::new()),
            refine_after: config.refine_after_failures,
            refine_min_interval: Duration::from_secs(config.refine_min_interval_secs),
        })
    }

    /// A prompt as stored (cheap: from memory).
    pub fn entry(&self, name: &str) -> Option<Arc<PromptEntry>> {
        self.snapshot.load().get(name).cloned()
    }

    /// Every prompt, sorted by name.
    pub fn entries(&self) -> Vec<Arc<PromptEntry>> {
        let mut all: Vec<_> = self.snapshot.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The version a label points at, a given version, or the latest.
    pub fn resolve(
        &self,
        name: &str,
        label: Option<&str>,
        version: Option<u32>,
    ) -> Result<(Arc<PromptEntry>, PromptVersion), PromptError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| PromptError::NotFound(name.into()))?;
        let number = match (label, version) {
            (Some(l), _) => *entry.labels.get(l).ok_or_else(|| PromptError::NoSuch {
                name: name.into(),
                what: format!("label `{l}`"),
            })?,
            (None, Some(v)) => v,
            (None, None) => entry.latest().map(|v| v.version).unwrap_or(0),
        };
        let v = entry
            .get(number)
            .cloned()
            .ok_or_else(|| PromptError::NoSuch {
                name: name.into(),
                what: format!("version {number}"),
            })?;
        Ok((entry, v))
    }

    fn save(&self, entry: PromptEntry) -> Result<Arc<PromptEntry>, PromptError> {
        let bytes = serde_json::to_vec(&entry).map_err(|e| PromptError::Invalid(e.to_string()))?;
        self.store.meta_set(PROMPTS, &entry.name, &bytes)?;
        self.store.flush()?;
        let entry = Arc::new(entry);
        let mut map = HashMap::clone(&self.snapshot.load());
        map.insert(entry.name.clone(), entry.clone());
        self.snapshot.store(Arc::new(map));
        Ok(entry)
    }

    /// Store a new version (numbered after the last) and point its labels at it.
    pub fn create_version(
        &self,
        name: &str,
        new: NewVersion,
    ) -> Result<(Arc<PromptEntry>, u32), PromptError> {
        let NewVersion {
            template,
            model_settings,
            notes,
            labels,
            actor,
            from_proposal,
        } = new;
        let labels = &labels[..];
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(PromptError::Invalid(format!(
                "prompt name `{name}` must be 1-128 letters, digits, `-`, `_` or `.`"
            )));
        }
        if template.trim().is_empty() {
            return Err(PromptError::Invalid("`template` must not be empty".into()));
        }
        for l in labels {
            check_label(l)?;
        }
        let _guard = self.write.lock();
        let mut entry = self
            .entry(name)
            .map(|e| PromptEntry::clone(&e))
            .unwrap_or_else(|| PromptEntry {
                name: name.into(),
                versions: Vec::new(),
                labels: BTreeMap::new(),
            });
        let version = entry.latest().map_or(1, |v| v.version + 1);
        entry.versions.push(PromptVersion {
            version,
            template,
            model_settings,
            notes,
            created_at: now_ms(),
            created_by: actor,
            from_proposal,
        });
        for l in labels {
            entry.labels.insert(l.clone(), version);
        }
        Ok((self.save(entry)?, version))
    }

    /// Point a label at a version.
    pub fn set_label(
        &self,
        name: &str,
        label: &str,
        version: u32,
    ) -> Result<Arc<PromptEntry>, PromptError> {
        check_label(label)?;
        let _guard = self.write.lock();
        let current = self
            .entry(name)
            .ok_or_else(|| PromptError::NotFound(name.into()))?;
        let mut entry = PromptEntry::clone(&current);
        if entry.get(version).is_none() {
            return Err(PromptError::NoSuch {
                name: name.into(),
                what: format!("version {version}"),
            });
        }
        entry.labels.insert(label.into(), version);
        self.save(entry)
    }

    /// A version's most recent failures (up to 50), newest first. Reads the store newest
    /// first and stops once it has them, or after 5 pages of listing: a refine costs the
    /// same on a store of a thousand events as on one of a hundred million.
    pub fn failures(&self, name: &str, version: &str) -> Result<Vec<Event>, PromptError> {
        let filter = EventFilter {
            prompt_name: Some(name.into()),
            prompt_version: Some(version.into()),
            ..EventFilter::default()
        };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..FAILURE_PAGES {
            let page = self
                .store
                .list(&filter, cursor.as_deref(), FAILURE_PAGE_EVENTS)?;
            out.extend(
                page.events
                    .into_iter()
                    .filter(|r| is_failure(&r.event, r.outcome.as_ref(), &r.reviews))
                    .map(|r| r.event),
            );
            if out.len() >= MAX_FAILURES {
                break;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        out.truncate(MAX_FAILURES);
        Ok(out)
    }

    /// Run every live refiner on a version and its recent failures; store what they
    /// propose. Returns the new proposals (possibly none).
    pub fn refine(
        &self,
        name: &str,
        version: Option<u32>,
        trigger: &str,
    ) -> Result<Vec<ProposalRecord>, PromptError> {
        let (_, base) = match version {
            Some(v) => self.resolve(name, None, Some(v))?,
            None => match self.resolve(name, Some("production"), None) {
                Ok(found) => found,
                Err(_) => self.resolve(name, None, None)?,
            },
        };
        let failures = self.failures(name, &base.version.to_string())?;
        // What is already waiting for a decision: the same edit is not proposed twice.
        let pending: Vec<ProposalRecord> = self
            .proposals(name)?
            .into_iter()
            .filter(|p| p.status == ProposalStatus::Pending && p.base_version == base.version)
            .collect();
        let prompt = Prompt {
            name: name.into(),
            version: base.version.to_string(),
            template: base.template.clone(),
        };
        let live = self.pipeline.live();
        let mut out = Vec::new();
        for refiner in &live.refiners {
            let outcome = refiner.refine(&prompt, &failures);
            match outcome.result {
                Ok(Some(p)) if p.template != base.template => {
                    if let Some(same) = pending
                        .iter()
                        .find(|q| q.template == p.template && q.refiner.name == refiner.id().name)
                    {
                        out.push(same.clone());
                        continue;
                    }
                    let record = ProposalRecord {
                        id: ulid::Ulid::new().to_string(),
                        prompt: name.into(),
                        base_version: base.version,
                        template: p.template,
                        rationale: p.rationale,
                        evidence: p.evidence,
                        refiner: refiner.id().clone(),
                        trigger: trigger.into(),
                        status: ProposalStatus::Pending,
                        created_at: now_ms(),
                        decided_by: None,
                        decided_at: None,
                        version: None,
                        reason: None,
                    };
                    self.put_proposal(&record)?;
                    out.push(record);
                }
                Ok(_) => {}
                Err(f) => {
                    tracing::warn!(plugin = %f.plugin, "refiner failed on prompt {name} v{}: {}", base.version, f.message)
                }
            }
        }
        Ok(out)
    }

    fn put_proposal(&self, p: &ProposalRecord) -> Result<(), PromptError> {
        let bytes = serde_json::to_vec(p).map_err(|e| PromptError::Invalid(e.to_string()))?;
        self.store
            .meta_set(PROPOSALS, &format!("{}\u{1}{}", p.prompt, p.id), &bytes)?;
        self.store.flush()?;
        Ok(())
    }

    /// Proposals for a prompt, oldest first.
    pub fn proposals(&self, name: &str) -> Result<Vec<ProposalRecord>, PromptError> {
        Ok(self
            .store
            .meta_scan_prefix(PROPOSALS, &format!("{name}\u{1}"))?
            .into_iter()
            .filter_map(|(_, b)| serde_json::from_slice(&b).ok())
            .collect())
    }

    fn proposal(&self, name: &str, id: &str) -> Result<ProposalRecord, PromptError> {
        self.store
            .meta_get(PROPOSALS, &format!("{name}\u{1}{id}"))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| PromptError::NoSuch {
                name: name.into(),
                what: format!("proposal `{id}`"),
            })
    }

    /// Accept a proposal: it becomes a new version, optionally labelled.
    pub fn accept(
        &self,
        name: &str,
        id: &str,
        label: Option<&str>,
        actor: &str,
    ) -> Result<ProposalRecord, PromptError> {
        let mut p = self.proposal(name, id)?;
        if p.status != ProposalStatus::Pending {
            return Err(PromptError::Decided(id.into()));
        }
        let labels: Vec<String> = label.map(|l| vec![l.to_string()]).unwrap_or_default();
        let notes = Some(format!(
            "from proposal {id} by {}: {}",
            p.refiner.name, p.rationale
        ));
        let (_, version) = self.create_version(
            name,
            NewVersion {
                template: p.template.clone(),
                model_settings: None,
                notes,
                labels,
                actor: actor.into(),
                from_proposal: Some(id.into()),
            },
        )?;
        p.status = ProposalStatus::Accepted;
        p.decided_by = Some(actor.into());
        p.decided_at = Some(now_ms());
        p.version = Some(version);
        self.put_proposal(&p)?;
        Ok(p)
    }

    /// Reject a proposal, with a reason for the record.
    pub fn reject(
        &self,
        name: &str,
        id: &str,
        reason: Option<String>,
        actor: &str,
    ) -> Result<ProposalRecord, PromptError> {
        let mut p = self.proposal(name, id)?;
        if p.status != ProposalStatus::Pending {
            return Err(PromptError::Decided(id.into()));
        }
        p.status = ProposalStatus::Rejected;
        p.decided_by = Some(actor.into());
        p.decided_at = Some(now_ms());
        p.reason = reason;
        self.put_proposal(&p)?;
        Ok(p)
    }

    /// Count a failure of a prompt version; refine automatically every
    /// `refine-after-failures` failures (of a registered prompt), at most once per
    /// `refine-min-interval-secs`.
    pub fn note_failure(&self, prompt: &PromptRef) {
        // Only registered versions: the version is the client's string, and counting any
        // would let clients grow this map without bound (and refines of it would fail).
        let registered = self.entry(&prompt.name).is_some_and(|entry| {
            prompt
                .version
                .parse::<u32>()
                .is_ok_and(|v| entry.get(v).is_some())
        });
        if self.refine_after == 0 || !registered {
            return;
        }
        let due = {
            let mut failures = self.failures.lock();
            let next = failures
                .entry((prompt.name.clone(), prompt.version.clone()))
                .or_default();
            next.failures += 1;
            let rested = next
                .last
                .is_none_or(|last| last.elapsed() >= self.refine_min_interval);
            if next.failures >= self.refine_after && rested {
                next.failures = 0;
                next.last = Some(Instant::now());
                true
            } else {
                false
            }
        };
        if due {
            let version = prompt.version.parse::<u32>().ok();
            match self.refine(&prompt.name, version, "auto") {
                Ok(p) => {
                    tracing::info!(prompt = %prompt.name, version = %prompt.version, proposals = p.len(), "automatic refine ran")
                }
                Err(e) => tracing::warn!(prompt = %prompt.name, "automatic refine failed: {e}"),
            }
        }
    }
}

fn check_label(label: &str) -> Result<(), PromptError> {
    if label.is_empty()
        || label.len() > 64
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PromptError::Invalid(format!(
            "label `{label}` must be 1-64 letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_computation() {
        let r = Rate::new(1, 2);
        assert_eq!(r.rate, Some(0.5));
        let [lo, hi] = r.ci95.expect("interval");
        // Wilson 95% for 1/2: 0.0945 .. 0.9055.
        assert!(
            (lo - 0.0945).abs() < 1e-3 && (hi - 0.9055).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(Rate::new(0, 0).rate, None);
    }

    #[test]
    fn mean_interval_is_clamped_to_the_score_range() {
        let m = Mean::new(&[1.0, 0.0, 0.75, 0.0]);
        assert_eq!(m.mean, Some(0.4375));
        let [lo, hi] = m.ci95.expect("interval");
        assert!(lo >= 0.0 && hi <= 1.0 && lo < 0.4375 && hi > 0.4375);
    }

    #[test]
    fn diff_shows_added_lines() {
        let d = diff("a\nb\n", "a\nb\nBe concise.\n", "v1", "proposal");
        assert!(d.contains("+Be concise."), "{d}");
        assert!(d.starts_with("--- v1"), "{d}");
    }
}
