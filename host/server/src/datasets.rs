//! Fine-tuning datasets built from feedback and reviews: SFT (OpenAI chat format),
//! DPO (TRL `prompt/chosen/rejected`, or OpenAI's preference format) and KTO (TRL
//! `prompt/completion/label`), one JSON object per line.
//!
//! Building a row is a pure function of a stored record, so the HTTP export and
//! `flywheel export` produce the same bytes. Sensitive events are left out unless
//! asked for, identical rows are written once, and every skip is counted by reason.

use std::collections::{BTreeMap, HashSet};

use flywheel_model::{EventRecord, Feedback, Thumb, Verdict};
use serde::Serialize;
use serde_json::{Value, json};

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sft,
    Dpo,
    Kto,
}

impl Kind {
    /// Parse the URL's `{kind}`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sft" => Some(Self::Sft),
            "dpo" => Some(Self::Dpo),
            "kto" => Some(Self::Kto),
            _ => None,
        }
    }
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// TRL's column names (`prompt`, `chosen`, `rejected`, `completion`, `label`);
    /// for SFT, OpenAI chat `messages` (which TRL also reads).
    #[default]
    Trl,
    /// OpenAI fine-tuning formats (for DPO: `input`, `preferred_output`,
    /// `non_preferred_output`).
    Openai,
}

/// What to include.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub kind: Option<Kind>,
    pub format: Format,
    /// Include events marked sensitive (by a `sensitive` score ≥ 0.5 or a reviewer's
    /// `sensitive` tag). Off by default: fine-tuning data should not carry PII.
    pub include_sensitive: bool,
    /// Skip rows whose quality is below this (0..=1).
    pub min_quality: Option<f64>,
}

/// Rows written and skipped, by reason.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub rows: u64,
    pub skipped: BTreeMap<&'static str, u64>,
}

impl Summary {
    fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }
}

/// Whether people or policies flagged the event as sensitive.
pub fn is_sensitive(r: &EventRecord) -> bool {
    let scored = r.outcome.as_ref().is_some_and(|o| {
        o.scores
            .iter()
            .any(|s| s.score.name == "sensitive" && s.score.value >= 0.5)
    });
    let tagged = r
        .reviews
        .iter()
        .any(|rv| rv.tags.iter().any(|t| t.eq_ignore_ascii_case("sensitive")));
    scored || tagged
}

/// How good the row's target answer is, 0..=1: a reviewer's rating if there is one,
/// 1.0 for a human-written correction, else the satisfaction score.
fn quality(r: &EventRecord, corrected: bool) -> f64 {
    if let Some(rating) = r.reviews.iter().rev().find_map(|rv| rv.rating) {
        return (f64::from(rating) - 1.0) / 4.0;
    }
    if corrected {
        return 1.0;
    }
    r.outcome
        .as_ref()
        .and_then(|o| o.scores.iter().find(|s| s.score.name == "satisfaction"))
        .map_or(1.0, |s| s.score.value)
}

fn messages(input: &str, answer: &str) -> Value {
    json!([{"role": "user", "content": input}, {"role": "assistant", "content": answer}])
}

/// The row for one record, or why there is none.
pub fn row(r: &EventRecord, options: &Options, kind: Kind) -> Result<Value, &'static str> {
    if !options.include_sensitive && is_sensitive(r) {
        return Err("sensitive");
    }
    let e = &r.event;
    let correction = r
        .correction
        .as_ref()
        .map(|c| c.text.as_str())
        .filter(|t| *t != e.output);
    let latest_verdict = r.reviews.last().map(|rv| rv.verdict);
    let (row, corrected) = match kind {
        Kind::Sft => match (correction, latest_verdict) {
            (Some(c), _) => (json!({"messages": messages(&e.input, c)}), true),
            (None, Some(Verdict::Approve)) => {
                (json!({"messages": messages(&e.input, &e.output)}), false)
            }
            _ => return Err("no_correction_or_approval"),
        },
        Kind::Dpo => {
            let Some(c) = correction else {
                return Err("no_correction");
            };
            let row = match options.format {
                Format::Trl => json!({"prompt": e.input, "chosen": c, "rejected": e.output}),
                Format::Openai => json!({
                    "input": {"messages": [{"role": "user", "content": e.input}]},
                    "preferred_output": [{"role": "assistant", "content": c}],
                    "non_preferred_output": [{"role": "assistant", "content": e.output}],
                }),
            };
            (row, true)
        }
        Kind::Kto => {
            // A reviewer's verdict outranks the user's thumbs, which outrank a rating.
            let label = match (latest_verdict, &e.feedback) {
                (Some(v), _) => v == Verdict::Approve,
                (None, Feedback::Thumbs { value }) => *value == Thumb::Up,
                (None, Feedback::Rating { value, scale }) if scale > &1.0 => {
                    let norm = (value - 1.0) / (scale - 1.0);
                    if norm >= 0.75 {
                        true
                    } else if norm <= 0.25 {
                        false
                    } else {
                        return Err("no_label");
                    }
                }
                (None, Feedback::Correction { .. }) => false,
                _ => return Err("no_label"),
            };
            (
                json!({"prompt": e.input, "completion": e.output, "label": label}),
                false,
            )
        }
    };
    if options
        .min_quality
        .is_some_and(|min| quality(r, corrected) < min)
    {
        return Err("below_min_quality");
    }
    Ok(row)
}

/// Turns records into JSONL lines, deduplicating identical rows.
pub struct Builder {
    options: Options,
    kind: Kind,
    seen: HashSet<blake3::Hash>,
    pub summary: Summary,
}

impl Builder {
    pub fn new(kind: Kind, options: Options) -> Self {
        Self {
            options,
            kind,
            seen: HashSet::new(),
            summary: Summary::default(),
        }
    }

    /// The line (with its newline) for a record, if it makes one.
    pub fn line(&mut self, record: &EventRecord) -> Option<String> {
        match row(record, &self.options, self.kind) {
            Ok(row) => {
                let mut line = row.to_string();
                if !self.seen.insert(blake3::hash(line.as_bytes())) {
                    self.summary.skip("duplicate");
                    return None;
                }
                self.summary.rows += 1;
                line.push('\n');
                Some(line)
            }
            Err(why) => {
                self.summary.skip(why);
                None
            }
        }
    }

    /// The closing summary line.
    pub fn summary_line(&self) -> String {
        format!("{}\n", json!({"_flywheel_summary": self.summary}))
    }
}
