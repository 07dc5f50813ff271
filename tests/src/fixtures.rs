//! Fixture events: small JSON files in `tests/fixtures/`, named after what they show.
//! They are written in the API's input form; [`event`] fills in what the host assigns.

use std::path::PathBuf;

use flywheel_model::Event;

/// The directory holding the fixture files.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The raw JSON of `fixtures/<name>.json`, as an application would send it.
pub fn json(name: &str) -> serde_json::Value {
    let path = dir().join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The fixture as a stored event (with a fixed `received_at`).
pub fn event(name: &str) -> Event {
    let mut value = json(name);
    let obj = value.as_object_mut().expect("fixture is an object");
    obj.entry("received_at")
        .or_insert(serde_json::json!(1_760_000_000_000u64));
    obj.entry("id").or_insert(serde_json::json!(name));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("fixture {name} is not an event: {e}"))
}
