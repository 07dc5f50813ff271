//! Events as clients send them, and the checks that turn them into stored events.
//!
//! [`parse_event`] works on a `serde_json::Value` so that every error names the field
//! (`events[3].feedback.scale`), which serde's derive cannot do for tagged enums.
//! [`parse_fast`] reads the common, well-formed body straight into types and hands
//! anything else to it. Nothing here touches the store: a rejected event leaves no trace.

use std::collections::BTreeMap;

use flywheel_model::{Event, Feedback, PromptRef, Thumb};
use serde_json::{Map, Value};

use crate::config::RequestLimits;

/// Why one event was refused: a stable code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    /// `missing_field`, `invalid_type`, `invalid_value`, `unknown_field`,
    /// `unknown_feedback_type`, `out_of_range`, `too_long`.
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: String) -> InputError {
    InputError { code, message }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a str,
    limits: &'a RequestLimits,
}

impl<'a> Fields<'a> {
    fn name(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn check_len(&self, field: &str, s: &str, max: usize) -> Result<(), InputError> {
        if s.len() > max {
            return Err(err(
                "too_long",
                format!(
                    "`{}` is {} bytes, over the limit of {max}",
                    self.name(field),
                    s.len()
                ),
            ));
        }
        Ok(())
    }

    fn string(&self, field: &str, max: usize) -> Result<Option<String>, InputError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                self.check_len(field, s, max)?;
                Ok(Some(s.clone()))
            }
            Some(other) => Err(err(
                "invalid_type",
                format!(
                    "`{}` must be a string, not {}",
                    self.name(field),
                    type_name(other)
                ),
            )),
        }
    }

    fn required_string(&self, field: &str, max: usize) -> Result<String, InputError> {
        self.string(field, max)?.ok_or_else(|| {
            err(
                "missing_field",
                format!("`{}` is required", self.name(field)),
            )
        })
    }

    /// A person's words (a correction, a clarification, a comment): required, and not
    /// blank. An empty correction would become a training row with an empty answer.
    fn required_text(&self, field: &str, max: usize) -> Result<String, InputError> {
        let text = self.required_string(field, max)?;
        if text.trim().is_empty() {
            return Err(err(
                "invalid_value",
                format!("`{}` must not be empty", self.name(field)),
            ));
        }
        Ok(text)
    }

    fn id_string(&self, field: &str) -> Result<Option<String>, InputError> {
        let v = self.string(field, self.limits.max_id_bytes)?;
        if let Some(s) = &v {
            if s.is_empty() {
                return Err(err(
                    "invalid_value",
                    format!("`{}` must not be empty", self.name(field)),
                ));
            }
            if s.chars().any(char::is_control) {
                return Err(err(
                    "invalid_value",
                    format!("`{}` must not contain control characters", self.name(field)),
                ));
            }
        }
        Ok(v)
    }
}

const EVENT_FIELDS: &[&str] = &[
    "id",
    "trace_id",
    "session_id",
    "user_id",
    "model",
    "prompt",
    "input",
    "output",
    "context",
    "feedback",
    "metadata",
];

/// Check one event in its JSON form and build the stored event. `id` and
/// `received_at` are the host's when the client gave none.
pub fn parse_event(
    value: &Value,
    path: &str,
    limits: &RequestLimits,
    assign_id: impl FnOnce() -> String,
    received_at: u64,
) -> Result<Event, InputError> {
    let obj = value.as_object().ok_or_else(|| {
        let at = if path.is_empty() {
            "the event".to_string()
        } else {
            format!("`{path}`")
        };
        err(
            "invalid_type",
            format!("{at} must be an object, not {}", type_name(value)),
        )
    })?;
    let f = Fields { obj, path, limits };
    if let Some(unknown) = obj.keys().find(|k| !EVENT_FIELDS.contains(&k.as_str())) {
        return Err(err(
            "unknown_field",
            format!(
                "unknown field `{}`; expected one of {}",
                f.name(unknown),
                EVENT_FIELDS.join(", ")
            ),
        ));
    }
    let max_text = limits.max_text_bytes;
    let input = f.required_string("input", max_text)?;
    let output = f.required_string("output", max_text)?;
    let feedback = match obj.get("feedback") {
        None | Some(Value::Null) => {
            return Err(err(
                "missing_field",
                format!("`{}` is required", f.name("feedback")),
            ));
        }
        Some(v) => parse_feedback(v, &f.name("feedback"), limits)?,
    };
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            let pf = Fields {
                obj: p,
                path: &f.name("prompt"),
                limits,
            };
            if let Some(unknown) = p
                .keys()
                .find(|k| !["name", "version"].contains(&k.as_str()))
            {
                return Err(err(
                    "unknown_field",
                    format!("unknown field `{}`", pf.name(unknown)),
                ));
            }
            // Both name a prompt in filters and stats: held to the rules of ids.
            let required = |field: &str| {
                pf.id_string(field)?.ok_or_else(|| {
                    err("missing_field", format!("`{}` is required", pf.name(field)))
                })
            };
            let version = match p.get("version") {
                Some(Value::Number(n)) => n.to_string(),
                _ => required("version")?,
            };
            Some(PromptRef {
                name: required("name")?,
                version,
            })
        }
        Some(other) => {
            return Err(err(
                "invalid_type",
                format!(
                    "`{}` must be an object, not {}",
                    f.name("prompt"),
                    type_name(other)
                ),
            ));
        }
    };
    let context = match obj.get("context") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > limits.max_context_passages {
                return Err(err(
                    "too_long",
                    format!(
                        "`{}` has {} passages, over the limit of {}",
                        f.name("context"),
                        items.len(),
                        limits.max_context_passages
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => {
                        f.check_len(&format!("context[{i}]"), s, max_text)?;
                        Ok(s.clone())
                    }
                    other => Err(err(
                        "invalid_type",
                        format!(
                            "`{}` must be a string, not {}",
                            f.name(&format!("context[{i}]")),
                            type_name(other)
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(err(
                "invalid_type",
                format!(
                    "`{}` must be an array of strings, not {}",
                    f.name("context"),
                    type_name(other)
                ),
            ));
        }
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            if m.len() > limits.max_metadata_entries {
                return Err(err(
                    "too_long",
                    format!(
                        "`{}` has {} entries, over the limit of {}",
                        f.name("metadata"),
                        m.len(),
                        limits.max_metadata_entries
                    ),
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let field = format!("metadata.{k}");
                f.check_len(&field, k, limits.max_id_bytes)?;
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(err(
                            "invalid_type",
                            format!(
                                "`{}` must be a string, not {}",
                                f.name(&field),
                                type_name(other)
                            ),
                        ));
                    }
                };
                f.check_len(&field, &v, limits.max_id_bytes)?;
                out.insert(k.clone(), v);
            }
            out
        }
        Some(other) => {
            return Err(err(
                "invalid_type",
                format!(
                    "`{}` must be an object of strings, not {}",
                    f.name("metadata"),
                    type_name(other)
                ),
            ));
        }
    };
    let id = match f.id_string("id")? {
        Some(id) => id,
        None => assign_id(),
    };
    Ok(Event {
        id,
        received_at,
        trace_id: f.id_string("trace_id")?,
        session_id: f.id_string("session_id")?,
        user_id: f.id_string("user_id")?,
        model: f.id_string("model")?,
        prompt,
        input,
        output,
        context,
        feedback,
        metadata,
    })
}

/// The scales a rating may use; its value is in `1..=scale`. Both parsers check these.
const RATING_SCALES: std::ops::RangeInclusive<f64> = 2.0..=100.0;

const FEEDBACK_TYPES: &str = "thumbs, rating, correction, clarification, comment, none";

fn parse_feedback(v: &Value, path: &str, limits: &RequestLimits) -> Result<Feedback, InputError> {
    let obj = v.as_object().ok_or_else(|| {
        err(
            "invalid_type",
            format!("`{path}` must be an object, not {}", type_name(v)),
        )
    })?;
    let f = Fields { obj, path, limits };
    let kind = f.required_string("type", 64)?;
    let allowed: &[&str] = match kind.as_str() {
        "thumbs" | "rating" => &["type", "value", "scale"],
        "correction" | "clarification" | "comment" => &["type", "text"],
        "none" => &["type"],
        other => {
            return Err(err(
                "unknown_feedback_type",
                format!(
                    "`{}` is `{other}`; expected one of {FEEDBACK_TYPES}",
                    f.name("type")
                ),
            ));
        }
    };
    if let Some(unknown) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            "unknown_field",
            format!(
                "unknown field `{}` for feedback type `{kind}`",
                f.name(unknown)
            ),
        ));
    }
    let number = |field: &str| -> Result<f64, InputError> {
        match obj.get(field) {
            Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                err(
                    "invalid_value",
                    format!("`{}` must be a finite number", f.name(field)),
                )
            }),
            None | Some(Value::Null) => Err(err(
                "missing_field",
                format!("`{}` is required", f.name(field)),
            )),
            Some(other) => Err(err(
                "invalid_type",
                format!(
                    "`{}` must be a number, not {}",
                    f.name(field),
                    type_name(other)
                ),
            )),
        }
    };
    let max_text = limits.max_text_bytes;
    Ok(match kind.as_str() {
        "thumbs" => match f.required_string("value", 16)?.as_str() {
            "up" => Feedback::Thumbs { value: Thumb::Up },
            "down" => Feedback::Thumbs { value: Thumb::Down },
            other => {
                return Err(err(
                    "invalid_value",
                    format!(
                        "`{}` is `{other}`; expected `up` or `down`",
                        f.name("value")
                    ),
                ));
            }
        },
        "rating" => {
            let scale = number("scale")?;
            let value = number("value")?;
            if !RATING_SCALES.contains(&scale) || scale.fract() != 0.0 {
                return Err(err(
                    "out_of_range",
                    format!(
                        "`{}` is {scale}; it must be a whole number between {} and {}",
                        f.name("scale"),
                        RATING_SCALES.start(),
                        RATING_SCALES.end()
                    ),
                ));
            }
            if !(1.0..=scale).contains(&value) {
                return Err(err(
                    "out_of_range",
                    format!(
                        "`{}` is {value}, outside its scale 1..={scale}",
                        f.name("value")
                    ),
                ));
            }
            Feedback::Rating { value, scale }
        }
        "correction" => Feedback::Correction {
            text: f.required_text("text", max_text)?,
        },
        "clarification" => Feedback::Clarification {
            text: f.required_text("text", max_text)?,
        },
        "comment" => Feedback::Comment {
            text: f.required_text("text", max_text)?,
        },
        _ => Feedback::None,
    })
}

/// A body that is read straight into types: one event, or a batch of them.
#[derive(Debug)]
pub enum Fast {
    Single(Box<Event>),
    Batch(Vec<Event>),
}

/// The common case without the `Value` tree: a body whose every event is well formed
/// and within the limits, read straight into types (about 2.5× faster than
/// [`parse_event`] over a `Value`). Anything else returns `None`, and the caller parses
/// the body again with [`parse_event`], which names the field in its error: a wrong type,
/// an unknown field, a number where a string usually is (a numeric prompt version or
/// metadata value), a duplicate key, a bound crossed, an item of a batch that is bad.
/// So this accepts a subset of what `parse_event` accepts, and builds the same events
/// (a test holds the two together).
pub fn parse_fast(
    body: &[u8],
    limits: &RequestLimits,
    mut assign_id: impl FnMut() -> String,
    received_at: u64,
) -> Option<Fast> {
    let mut build = |raw: RawEvent| raw.into_event(limits, &mut assign_id, received_at);
    if let Ok(raw) = serde_json::from_slice::<RawEvent>(body) {
        return build(raw).map(|e| Fast::Single(Box::new(e)));
    }
    let batch = serde_json::from_slice::<RawBatch>(body).ok()?;
    if batch.events.is_empty() || batch.events.len() > limits.max_batch {
        return None;
    }
    batch
        .events
        .into_iter()
        .map(build)
        .collect::<Option<Vec<_>>>()
        .map(Fast::Batch)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    events: Vec<RawEvent>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    name: String,
    version: String,
}

/// An event as [`EVENT_FIELDS`] has it, strings only.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Option<String>,
    trace_id: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    model: Option<String>,
    prompt: Option<RawPrompt>,
    input: String,
    output: String,
    context: Option<Vec<String>>,
    feedback: RawFeedback,
    metadata: Option<BTreeMap<String, String>>,
}

/// A field that may be absent, `null`, or set: `parse_event` refuses a key a feedback
/// type does not take even when it is `null`, so absence must be told from `null`.
#[derive(Default)]
enum Field<T> {
    #[default]
    Absent,
    Present(Option<T>),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Field<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(Field::Present)
    }
}

/// Feedback with every key any type takes; [`RawFeedback::into_feedback`] keeps the
/// combinations `parse_event` accepts.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeedback {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Field<Value>,
    #[serde(default)]
    scale: Field<Value>,
    #[serde(default)]
    text: Field<String>,
}

impl RawFeedback {
    fn into_feedback(self, limits: &RequestLimits) -> Option<Feedback> {
        use Field::{Absent, Present};
        let number = |f: Field<Value>| match f {
            Present(Some(Value::Number(n))) => n.as_f64().filter(|x| x.is_finite()),
            _ => None,
        };
        let text = |f: Field<String>| match f {
            Present(Some(t)) if t.len() <= limits.max_text_bytes && !t.trim().is_empty() => Some(t),
            _ => None,
        };
        match (self.kind.as_str(), self.value, self.scale, self.text) {
            ("thumbs", Present(Some(Value::String(v))), Absent, Absent) => match v.as_str() {
                "up" => Some(Feedback::Thumbs { value: Thumb::Up }),
                "down" => Some(Feedback::Thumbs { value: Thumb::Down }),
                _ => None,
            },
            ("rating", value, scale, Absent) => {
                let (value, scale) = (number(value)?, number(scale)?);
                (RATING_SCALES.contains(&scale)
                    && scale.fract() == 0.0
                    && (1.0..=scale).contains(&value))
                .then_some(Feedback::Rating { value, scale })
            }
            ("correction", Absent, Absent, t) => text(t).map(|text| Feedback::Correction { text }),
            ("clarification", Absent, Absent, t) => {
                text(t).map(|text| Feedback::Clarification { text })
            }
            ("comment", Absent, Absent, t) => text(t).map(|text| Feedback::Comment { text }),
            ("none", Absent, Absent, Absent) => Some(Feedback::None),
            _ => None,
        }
    }
}

impl RawEvent {
    /// The event, if `parse_event` would accept it as it is: the same bounds, without the
    /// messages (`None` sends the body to `parse_event` for those).
    fn into_event(
        self,
        limits: &RequestLimits,
        assign_id: &mut impl FnMut() -> String,
        received_at: u64,
    ) -> Option<Event> {
        let id = |s: &str| {
            !s.is_empty() && s.len() <= limits.max_id_bytes && !s.chars().any(char::is_control)
        };
        let id_ok = |v: &Option<String>| v.as_deref().is_none_or(id);
        let text_ok = |s: &str| s.len() <= limits.max_text_bytes;
        let short_ok = |s: &str| s.len() <= limits.max_id_bytes;
        let ok = [
            &self.id,
            &self.trace_id,
            &self.session_id,
            &self.user_id,
            &self.model,
        ]
        .into_iter()
        .all(id_ok)
            && self
                .prompt
                .as_ref()
                .is_none_or(|p| id(&p.name) && id(&p.version))
            && text_ok(&self.input)
            && text_ok(&self.output)
            && self.context.as_ref().is_none_or(|c| {
                c.len() <= limits.max_context_passages && c.iter().all(|s| text_ok(s))
            })
            && self.metadata.as_ref().is_none_or(|m| {
                m.len() <= limits.max_metadata_entries
                    && m.iter().all(|(k, v)| short_ok(k) && short_ok(v))
            });
        if !ok {
            return None;
        }
        Some(Event {
            feedback: self.feedback.into_feedback(limits)?,
            id: self.id.unwrap_or_else(assign_id),
            received_at,
            trace_id: self.trace_id,
            session_id: self.session_id,
            user_id: self.user_id,
            model: self.model,
            prompt: self.prompt.map(|p| PromptRef {
                name: p.name,
                version: p.version,
            }),
            input: self.input,
            output: self.output,
            context: self.context.unwrap_or_default(),
            metadata: self.metadata.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Event, InputError> {
        parse_event(&v, "", &RequestLimits::default(), || "assigned".into(), 7)
    }

    fn base() -> Value {
        json!({"input": "q", "output": "a", "feedback": {"type": "thumbs", "value": "up"}})
    }

    #[test]
    fn minimal_event_gets_an_id_and_time() {
        let e = parse(base()).expect("valid");
        assert_eq!((e.id.as_str(), e.received_at), ("assigned", 7));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"output": "a", "feedback": {"type": "none"}}),
                "missing_field",
                "`input`",
            ),
            (
                json!({"input": 1, "output": "a", "feedback": {"type": "none"}}),
                "invalid_type",
                "`input`",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "emoji"}}),
                "unknown_feedback_type",
                "emoji",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "rating", "value": 6, "scale": 5}}),
                "out_of_range",
                "feedback.value",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "thumbs", "value": "sideways"}}),
                "invalid_value",
                "feedback.value",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "none"}, "colour": "red"}),
                "unknown_field",
                "colour",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "none"}, "context": ["ok", 3]}),
                "invalid_type",
                "context[1]",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "correction", "text": "  "}}),
                "invalid_value",
                "`feedback.text` must not be empty",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "rating", "value": 2, "scale": 2.5}}),
                "out_of_range",
                "whole number",
            ),
            (
                json!({"input": "q", "output": "a", "feedback": {"type": "none"}, "prompt": {"name": "", "version": "1"}}),
                "invalid_value",
                "`prompt.name` must not be empty",
            ),
        ];
        for (value, code, needle) in cases {
            let e = parse(value.clone()).expect_err("invalid");
            assert_eq!(e.code, code, "{value}: {e}");
            assert!(e.message.contains(needle), "{value}: {e}");
        }
    }

    /// The fast path accepts only what `parse_event` accepts, and builds the same event;
    /// and it does take the common shapes (else it would be dead weight).
    #[test]
    fn the_fast_path_agrees_with_parse_event() {
        let limits = RequestLimits {
            max_text_bytes: 40,
            max_id_bytes: 8,
            max_context_passages: 2,
            max_metadata_entries: 2,
            max_batch: 3,
            ..RequestLimits::default()
        };
        let full = json!({
            "id": "e-1", "trace_id": "t", "session_id": "s", "user_id": "u", "model": "m",
            "prompt": {"name": "p", "version": "3"}, "input": "q", "output": "a",
            "context": ["c1", "c2"], "feedback": {"type": "rating", "value": 4, "scale": 5},
            "metadata": {"k": "v", "k2": "v2"}
        });
        let shapes = [
            full.clone(),
            base(),
            json!({"input": "q", "output": "a", "feedback": {"type": "none"}}),
            json!({"input": "", "output": "", "feedback": {"type": "correction", "text": "better"}}),
            json!({"input": "q", "output": "a", "feedback": {"type": "clarification", "text": "?"}, "context": []}),
            json!({"input": "q", "output": "a", "feedback": {"type": "comment", "text": "ok"}, "metadata": {}}),
            json!({"input": "q", "output": "a", "feedback": {"type": "thumbs", "value": "down"}, "id": null, "prompt": null, "context": null, "metadata": null}),
        ];
        let long = |n: usize| json!("x".repeat(n));
        // Each edit turns a valid event into one at a bound, over it, or of another shape.
        let edits: Vec<(&str, Value)> = vec![
            ("input", long(40)),
            ("input", long(41)),
            ("output", long(41)),
            ("input", json!(1)),
            ("input", Value::Null),
            ("id", json!("")),
            ("id", long(8)),
            ("id", long(9)),
            ("id", json!("a\u{7}b")),
            ("trace_id", json!("")),
            ("session_id", long(9)),
            ("user_id", json!("\n")),
            ("model", json!(3)),
            ("model", long(8)),
            ("prompt", json!({"name": "p", "version": 3})),
            ("prompt", json!({"name": "p"})),
            ("prompt", json!({"name": "p", "version": "v", "x": 1})),
            ("prompt", json!({"name": long(9), "version": "1"})),
            ("prompt", json!("p")),
            ("context", json!(["a", "b", "c"])),
            ("context", json!([long(41)])),
            ("context", json!(["a", 1])),
            ("context", json!("a")),
            ("metadata", json!({"a": 1, "b": true})),
            ("metadata", json!({"a": "1", "b": "2", "c": "3"})),
            ("metadata", json!({"key-too-long": "v"})),
            ("metadata", json!({"k": long(9)})),
            ("metadata", json!({"k": null})),
            ("metadata", json!([])),
            (
                "feedback",
                json!({"type": "rating", "value": 5, "scale": 5}),
            ),
            (
                "feedback",
                json!({"type": "rating", "value": 1, "scale": 2}),
            ),
            (
                "feedback",
                json!({"type": "rating", "value": 0.5, "scale": 5}),
            ),
            (
                "feedback",
                json!({"type": "rating", "value": 6, "scale": 5}),
            ),
            (
                "feedback",
                json!({"type": "rating", "value": 4, "scale": 101}),
            ),
            ("feedback", json!({"type": "rating", "value": 4})),
            (
                "feedback",
                json!({"type": "thumbs", "value": "up", "scale": 5}),
            ),
            ("feedback", json!({"type": "thumbs", "value": "sideways"})),
            ("feedback", json!({"type": "comment", "text": long(41)})),
            ("feedback", json!({"type": "comment"})),
            ("feedback", json!({"type": "none", "text": "x"})),
            ("feedback", json!({"type": "none", "text": null})),
            (
                "feedback",
                json!({"type": "thumbs", "value": "up", "scale": null}),
            ),
            (
                "feedback",
                json!({"type": "rating", "value": 4, "scale": 5, "text": null}),
            ),
            ("feedback", json!({"type": "correction", "text": null})),
            ("feedback", json!({"type": "correction", "text": ""})),
            (
                "feedback",
                json!({"type": "rating", "value": 2, "scale": 2.5}),
            ),
            ("prompt", json!({"name": "", "version": "1"})),
            ("prompt", json!({"name": "p", "version": ""})),
            ("prompt", json!({"name": "p\u{0007}", "version": "1"})),
            (
                "feedback",
                json!({"type": "clarification", "text": " \n\t"}),
            ),
            ("feedback", json!({"type": "comment", "text": " "})),
            (
                "feedback",
                json!({"type": "correction", "text": "t", "value": 1}),
            ),
            ("feedback", json!({"type": "thumbs", "value": 1})),
            ("feedback", json!({"type": null})),
            ("feedback", json!({"type": "stars"})),
            ("feedback", Value::Null),
            ("colour", json!("red")),
        ];
        let slow = |v: &Value| {
            let mut n = 0;
            parse_event(
                v,
                "",
                &limits,
                || {
                    n += 1;
                    format!("gen-{n}")
                },
                9,
            )
        };
        let fast = |bytes: &[u8]| {
            let mut n = 0;
            parse_fast(
                bytes,
                &limits,
                || {
                    n += 1;
                    format!("gen-{n}")
                },
                9,
            )
        };
        let mut taken = 0;
        let mut variants: Vec<Value> = shapes.to_vec();
        for shape in &shapes {
            for (field, value) in &edits {
                let mut v = shape.clone();
                v[*field] = value.clone();
                variants.push(v);
                let mut v = shape.clone();
                v.as_object_mut().expect("object").remove(*field);
                variants.push(v);
            }
        }
        for v in &variants {
            let bytes = serde_json::to_vec(v).expect("json");
            match fast(&bytes) {
                Some(Fast::Single(e)) => {
                    taken += 1;
                    assert_eq!(slow(v).as_ref(), Ok(&*e), "{v}");
                }
                Some(Fast::Batch(_)) => panic!("one event read as a batch: {v}"),
                None => {}
            }
        }
        for shape in &shapes {
            let bytes = serde_json::to_vec(shape).expect("json");
            assert!(fast(&bytes).is_some(), "the fast path takes {shape}");
        }
        assert!(taken > shapes.len(), "{taken}");
        // Batches: all good, or handed back whole (per-item errors are parse_event's).
        let batch =
            |items: Vec<Value>| serde_json::to_vec(&json!({"events": items})).expect("json");
        let Some(Fast::Batch(events)) = fast(&batch(shapes[..3].to_vec())) else {
            panic!("a good batch takes the fast path");
        };
        let expected: Vec<Event> = shapes[..3]
            .iter()
            .map(|v| slow(v).expect("valid"))
            .collect();
        assert_eq!(events.len(), 3);
        for (got, want) in events.iter().zip(&expected) {
            // Assigned ids are counted per batch on the fast path, per event here.
            assert_eq!(
                Event {
                    id: String::new(),
                    ..got.clone()
                },
                Event {
                    id: String::new(),
                    ..want.clone()
                }
            );
        }
        assert!(fast(&batch(vec![])).is_none());
        assert!(
            fast(&batch(shapes[..4].to_vec())).is_none(),
            "over max_batch"
        );
        assert!(fast(&batch(vec![base(), json!({"input": 1})])).is_none());
        assert!(fast(br#"{"events": [], "extra": 1}"#).is_none());
        assert!(fast(b"not json").is_none());
        // A repeated key: `parse_event` reads the last one; the fast path hands it back.
        let repeated =
            br#"{"input": "q", "input": "r", "output": "a", "feedback": {"type": "none"}}"#;
        assert!(fast(repeated).is_none());
    }

    #[test]
    fn over_long_text_is_refused() {
        let mut v = base();
        v["output"] = json!("x".repeat(RequestLimits::default().max_text_bytes + 1));
        let e = parse(v).expect_err("too long");
        assert_eq!(e.code, "too_long");
        assert!(e.message.contains("`output`"));
    }
}
