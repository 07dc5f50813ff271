//! How things are laid out as sled keys and values: key builders, the stored form of an
//! event, and JSON encode/decode helpers that turn bad bytes into `StoreError::Corrupt`.
//! It owns the byte formats only; it never opens trees or decides what to write.

use flywheel_model::{
    CallError, CallRecord, Correction, Event, EventRecord, EventStatus, FailureMode, Outcome,
    PluginKind, PluginRef, Review, Route, ScoreRecord, ShadowRun, Vote,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Result, StoreError};

/// The separator between a name and the rest of a key; names may therefore not contain it.
pub(crate) const SEP: u8 = 0;

/// An event as stored in the `events` tree, after its 8-byte `seq` prefix (see
/// [`encode_event`]). Its outcome lives in the `outcomes` tree: recording it must not
/// rewrite the event.
#[derive(Deserialize)]
pub(crate) struct StoredEvent {
    pub event: Event,
    /// Reviews from the queues; absent until the first one.
    #[serde(default)]
    pub reviews: Vec<Review>,
}

/// The borrowed twin of `StoredEvent`, so the hot path serializes without cloning.
#[derive(Serialize)]
struct StoredEventRef<'a> {
    event: &'a Event,
    #[serde(skip_serializing_if = "<[Review]>::is_empty")]
    reviews: &'a [Review],
}

impl StoredEvent {
    /// The record the API returns: the event, its outcome if processed, its reviews.
    pub fn into_record(self, outcome: Option<Outcome>) -> EventRecord {
        EventRecord {
            correction: Correction::effective(&self.event, &self.reviews),
            status: if outcome.is_some() {
                EventStatus::Processed
            } else {
                EventStatus::Pending
            },
            event: self.event,
            outcome,
            reviews: self.reviews,
        }
    }
}

/// An `events` value: `seq` (big-endian, the low half of the event's `log` key) then the
/// JSON of the event and its reviews. The prefix lets the conversion from the first
/// layout rebuild `log` keys without parsing events.
pub(crate) fn encode_event(seq: u64, event: &Event, reviews: &[Review]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&seq.to_be_bytes());
    serde_json::to_writer(&mut out, &StoredEventRef { event, reviews })
        .map_err(|e| StoreError::corrupt(format!("cannot encode: {e}")))?;
    Ok(out)
}

/// The `seq` prefix of an `events` value.
pub(crate) fn event_seq(bytes: &[u8]) -> Result<u64> {
    decode_u64("event seq", bytes.get(..8).unwrap_or_default())
}

/// An `events` value back into its parts: `seq` and the stored event.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<(u64, StoredEvent)> {
    let seq = event_seq(bytes)?;
    Ok((seq, decode("event", bytes.get(8..).unwrap_or_default())?))
}

/// An `outcomes` value: the `Outcome` as JSON, except that a call names its plugin by
/// its index in `plugins` when it is listed there (always, for calls the pipeline
/// makes). The API shows every call with its plugin's name, version and hash; storing
/// them once per outcome instead of twice takes about a quarter off each outcome, and
/// sled's cost per write grows with the bytes written. Values with full plugin refs in
/// calls (written before this form) still decode.
pub(crate) fn encode_outcome(outcome: &Outcome) -> Result<Vec<u8>> {
    let calls = outcome
        .calls
        .iter()
        .map(|c| CallRef {
            plugin: match outcome.plugins.iter().position(|p| *p == c.plugin) {
                Some(i) => PluginSlot::Index(i),
                None => PluginSlot::Full(&c.plugin),
            },
            kind: c.kind,
            duration_us: c.duration_us,
            error: c.error.as_ref(),
            failure_mode: c.failure_mode,
        })
        .collect();
    encode(&OutcomeRef {
        scores: &outcome.scores,
        votes: &outcome.votes,
        route: &outcome.route,
        calls,
        plugins: &outcome.plugins,
        processed_at: outcome.processed_at,
        shadow: &outcome.shadow,
    })
}

/// An `outcomes` value back into the `Outcome` the API shows.
pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<Outcome> {
    let stored: StoredOutcome = decode("outcome", bytes)?;
    let calls = stored
        .calls
        .into_iter()
        .map(|c| {
            let plugin = match c.plugin {
                StoredSlot::Full(p) => p,
                StoredSlot::Index(i) => stored.plugins.get(i).cloned().ok_or_else(|| {
                    StoreError::corrupt(format!(
                        "outcome: call names plugin {i} of {}",
                        stored.plugins.len()
                    ))
                })?,
            };
            Ok(CallRecord {
                plugin,
                kind: c.kind,
                duration_us: c.duration_us,
                error: c.error,
                failure_mode: c.failure_mode,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Outcome {
        scores: stored.scores,
        votes: stored.votes,
        route: stored.route,
        calls,
        plugins: stored.plugins,
        processed_at: stored.processed_at,
        shadow: stored.shadow,
    })
}

#[derive(Serialize)]
struct OutcomeRef<'a> {
    scores: &'a [ScoreRecord],
    votes: &'a [Vote],
    route: &'a Route,
    calls: Vec<CallRef<'a>>,
    plugins: &'a [PluginRef],
    processed_at: u64,
    #[serde(skip_serializing_if = "<[ShadowRun]>::is_empty")]
    shadow: &'a [ShadowRun],
}

#[derive(Serialize)]
struct CallRef<'a> {
    plugin: PluginSlot<'a>,
    kind: PluginKind,
    duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a CallError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_mode: Option<FailureMode>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PluginSlot<'a> {
    Index(usize),
    Full(&'a PluginRef),
}

#[derive(Deserialize)]
struct StoredOutcome {
    scores: Vec<ScoreRecord>,
    votes: Vec<Vote>,
    route: Route,
    calls: Vec<StoredCall>,
    plugins: Vec<PluginRef>,
    processed_at: u64,
    #[serde(default)]
    shadow: Vec<ShadowRun>,
}

#[derive(Deserialize)]
struct StoredCall {
    plugin: StoredSlot,
    kind: PluginKind,
    duration_us: u64,
    #[serde(default)]
    error: Option<CallError>,
    #[serde(default)]
    failure_mode: Option<FailureMode>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoredSlot {
    Index(usize),
    Full(PluginRef),
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::corrupt(format!("cannot encode: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

pub(crate) fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("{what}: expected 8 bytes")))?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn decode_str(what: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::corrupt(format!("{what}: not UTF-8")))
}

/// A `log` key: `received_at` then `seq`, both big-endian. The committer makes both
/// grow with every event it stores, so keys sort by arrival time and new keys always
/// land after every existing one (which is what lets the pending watermark only move on).
pub(crate) fn log_key(received_at: u64, seq: u64) -> [u8; 16] {
    (u128::from(received_at) << 64 | u128::from(seq)).to_be_bytes()
}

/// A `log` key as one number, for ordering and the watermark.
pub(crate) fn decode_log_key(key: &[u8]) -> Result<u128> {
    let arr: [u8; 16] = key
        .try_into()
        .map_err(|_| StoreError::corrupt("log key: expected 16 bytes"))?;
    Ok(u128::from_be_bytes(arr))
}

/// `name \0 rest`: a key under a name, so a prefix scan of `name \0` finds exactly its keys.
pub(crate) fn named_key(name: &str, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1 + rest.len());
    k.extend_from_slice(name.as_bytes());
    k.push(SEP);
    k.extend_from_slice(rest);
    k
}

/// Rejects names that would break `named_key` prefixes.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.as_bytes().contains(&SEP) {
        return Err(StoreError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}
