//! The event a plugin is called with: a handle the host lends for the call (WIT
//! resource `event`), read field by field.
//!
//! Each accessor copies its field into the guest the first time it is called and
//! keeps it, so a plugin pays only for what it reads, once. Natively (tests, tools)
//! an event is plain data: build an [`EventData`] and convert it.

use std::cell::OnceCell;

use crate::__private::bindings::flywheel::policy::types as wit;
use crate::{PromptRef, Signal};

/// One piece of feedback on one LLM answer.
///
/// Why accessors instead of public fields: the host copies a field into the plugin's
/// memory only when it is read. Copying every field into every plugin on every call
/// (as the 0.1 contract did) cost more than many plugins' own logic.
pub struct Event {
    source: Source,
    fields: Fields,
}

enum Source {
    /// A handle the host lent for this call; dropped (given back) with the event.
    Host(wit::Event),
    /// Plain data.
    Data(Box<EventData>),
}

/// The fields read from the host so far.
#[derive(Default)]
struct Fields {
    id: OnceCell<String>,
    received_at: OnceCell<u64>,
    trace_id: OnceCell<Option<String>>,
    session_id: OnceCell<Option<String>>,
    user_id: OnceCell<Option<String>>,
    model: OnceCell<Option<String>>,
    prompt: OnceCell<Option<PromptRef>>,
    input: OnceCell<String>,
    output: OnceCell<String>,
    context: OnceCell<Vec<String>>,
    signal: OnceCell<Signal>,
    metadata: OnceCell<Vec<(String, String)>>,
}

/// The fields of an event as plain data: what tests and tools build events from
/// (`EventData { output: ..., ..EventData::default() }.into()`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    /// Stable id: the client's, or one the host assigned (a ULID).
    pub id: String,
    /// When the host accepted the event, in milliseconds since the Unix epoch.
    pub received_at: u64,
    /// The application's trace id, if it sent one.
    pub trace_id: Option<String>,
    /// The application's session id, if it sent one.
    pub session_id: Option<String>,
    /// The application's user id, if it sent one.
    pub user_id: Option<String>,
    /// The model that produced `output`.
    pub model: Option<String>,
    /// The prompt template behind the answer.
    pub prompt: Option<PromptRef>,
    /// The user's request.
    pub input: String,
    /// The model's answer.
    pub output: String,
    /// Retrieved passages the answer was supposed to be grounded in.
    pub context: Vec<String>,
    /// What the user told us about the answer.
    pub signal: Signal,
    /// Free-form string metadata, sorted by key.
    pub metadata: Vec<(String, String)>,
}

impl Default for EventData {
    /// An event with empty text, no context and no signal.
    fn default() -> Self {
        EventData {
            id: String::new(),
            received_at: 0,
            trace_id: None,
            session_id: None,
            user_id: None,
            model: None,
            prompt: None,
            input: String::new(),
            output: String::new(),
            context: Vec::new(),
            signal: Signal::None,
            metadata: Vec::new(),
        }
    }
}

impl From<EventData> for Event {
    fn from(data: EventData) -> Self {
        Event {
            source: Source::Data(Box::new(data)),
            fields: Fields::default(),
        }
    }
}

impl Default for Event {
    /// An event with empty text, no context and no signal.
    fn default() -> Self {
        EventData::default().into()
    }
}

impl Clone for Event {
    /// A plain-data copy (every field read from the host first).
    fn clone(&self) -> Self {
        self.to_data().into()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.to_data() == other.to_data()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Data(d) => d.fmt(f),
            // Reading every field to print it would copy them all from the host.
            Source::Host(_) => f.debug_struct("Event").field("id", &self.id()).finish_non_exhaustive(),
        }
    }
}

/// Read a field: from the data, or from the host once.
macro_rules! field {
    ($self:ident, $name:ident) => {
        match &$self.source {
            Source::Data(d) => &d.$name,
            Source::Host(h) => $self.fields.$name.get_or_init(|| h.$name()),
        }
    };
}

impl Event {
    /// Wrap the handle the host passed to an export. Used by the export macros.
    #[doc(hidden)]
    pub fn from_host(handle: wit::Event) -> Self {
        Event {
            source: Source::Host(handle),
            fields: Fields::default(),
        }
    }

    /// Stable id: the client's, or one the host assigned (a ULID).
    pub fn id(&self) -> &str {
        field!(self, id)
    }

    /// When the host accepted the event, in milliseconds since the Unix epoch.
    pub fn received_at(&self) -> u64 {
        *field!(self, received_at)
    }

    /// The application's trace id, if it sent one.
    pub fn trace_id(&self) -> Option<&str> {
        field!(self, trace_id).as_deref()
    }

    /// The application's session id, if it sent one.
    pub fn session_id(&self) -> Option<&str> {
        field!(self, session_id).as_deref()
    }

    /// The application's user id, if it sent one.
    pub fn user_id(&self) -> Option<&str> {
        field!(self, user_id).as_deref()
    }

    /// The model that produced the answer, e.g. `gpt-4o-mini`.
    pub fn model(&self) -> Option<&str> {
        field!(self, model).as_deref()
    }

    /// The prompt template (name and version) behind the answer.
    pub fn prompt(&self) -> Option<&PromptRef> {
        field!(self, prompt).as_ref()
    }

    /// The user's request.
    pub fn input(&self) -> &str {
        field!(self, input)
    }

    /// The model's answer.
    pub fn output(&self) -> &str {
        field!(self, output)
    }

    /// Retrieved passages the answer was supposed to be grounded in.
    pub fn context(&self) -> &[String] {
        field!(self, context)
    }

    /// What the user told us about the answer.
    pub fn signal(&self) -> &Signal {
        field!(self, signal)
    }

    /// Every metadata pair, sorted by key.
    pub fn metadata_pairs(&self) -> &[(String, String)] {
        field!(self, metadata)
    }

    /// The first metadata value for `key`, if any.
    ///
    /// Why: metadata is a list of pairs, not a map; this is the lookup nearly
    /// everyone wants.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata_pairs()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The free text of the feedback (correction, clarification or comment), if
    /// the signal carries any.
    ///
    /// Why: most text heuristics look at "what the user wrote", whatever the kind
    /// of signal.
    pub fn feedback_text(&self) -> Option<&str> {
        self.signal().text()
    }

    /// Whether the event carries any non-blank retrieved context.
    ///
    /// Why: grounding heuristics must tell "no context" (cannot judge) from
    /// "context that does not support the answer".
    pub fn has_context(&self) -> bool {
        self.context().iter().any(|c| !c.trim().is_empty())
    }

    /// Every field as plain data (reading from the host whatever was not read yet).
    ///
    /// Why: for tools and tests that want the whole event; a plugin that reads
    /// only a few fields should call their accessors instead.
    pub fn to_data(&self) -> EventData {
        EventData {
            id: self.id().to_owned(),
            received_at: self.received_at(),
            trace_id: self.trace_id().map(str::to_owned),
            session_id: self.session_id().map(str::to_owned),
            user_id: self.user_id().map(str::to_owned),
            model: self.model().map(str::to_owned),
            prompt: self.prompt().cloned(),
            input: self.input().to_owned(),
            output: self.output().to_owned(),
            context: self.context().to_vec(),
            signal: self.signal().clone(),
            metadata: self.metadata_pairs().to_vec(),
        }
    }
}
