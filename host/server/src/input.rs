//! Events as clients send them, and the checks that turn them into stored events.
//!
//! Parsing is done on `serde_json::Value` first so that every error names the field
//! (`events[3].feedback.scale`), which serde's derive cannot do for tagged enums.
//! Nothing here touches the store: a rejected event leaves no trace.

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
            let version = match p.get("version") {
                Some(Value::Number(n)) => n.to_string(),
                _ => pf.required_string("version", limits.max_id_bytes)?,
            };
            Some(PromptRef {
                name: pf.required_string("name", limits.max_id_bytes)?,
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
            if !(2.0..=100.0).contains(&scale) {
                return Err(err(
                    "out_of_range",
                    format!(
                        "`{}` is {scale}; it must be between 2 and 100",
                        f.name("scale")
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
            text: f.required_string("text", max_text)?,
        },
        "clarification" => Feedback::Clarification {
            text: f.required_string("text", max_text)?,
        },
        "comment" => Feedback::Comment {
            text: f.required_string("text", max_text)?,
        },
        _ => Feedback::None,
    })
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
        ];
        for (value, code, needle) in cases {
            let e = parse(value.clone()).expect_err("invalid");
            assert_eq!(e.code, code, "{value}: {e}");
            assert!(e.message.contains(needle), "{value}: {e}");
        }
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
