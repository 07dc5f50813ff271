//! How things are laid out as sled keys and values: key builders, the stored form of an
//! event, and JSON encode/decode helpers that turn bad bytes into `StoreError::Corrupt`.
//! It owns the byte formats only; it never opens trees or decides what to write.

use flywheel_model::{
    CallError, CallRecord, Correction, ErrorClass, Event, EventRecord, EventStatus, FailureMode,
    Outcome, PluginKind, PluginRef, QueueTarget, Review, Route, ScoreRecord, ShadowRun, Vote,
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

/// The first byte of an `outcomes` value in the binary layout. Outcomes written before
/// it are JSON and start with `{`.
const OUTCOME_BINARY_V1: u8 = 1;
/// The binary layout with the `queue` key of the event's queue item in front, so that
/// erasing an event finds its item without reading its queue.
const OUTCOME_BINARY_V2: u8 = 2;

/// What an `outcomes` value says about its event's queue item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKey<'a> {
    /// The item's key in `queue`, or `None`: the outcome queued nothing.
    Known(Option<&'a [u8]>),
    /// Written before outcomes recorded it: look the item up by its event.
    Unknown,
}

/// The queue item an `outcomes` value names (see [`ItemKey`]).
pub(crate) fn outcome_item_key(bytes: &[u8]) -> Result<ItemKey<'_>> {
    match bytes.split_first() {
        Some((&OUTCOME_BINARY_V2, rest)) => {
            let (key, _) = split_item_key(rest)?;
            Ok(ItemKey::Known((!key.is_empty()).then_some(key)))
        }
        _ => Ok(ItemKey::Unknown),
    }
}

/// A V2 value after its version byte: the item key (`u32` length, then the bytes) and the
/// rest.
fn split_item_key(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || StoreError::corrupt("outcome: truncated item key");
    let len = bytes.get(..4).ok_or_else(corrupt)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let key = bytes.get(4..4 + len).ok_or_else(corrupt)?;
    Ok((key, &bytes[4 + len..]))
}

/// An `outcomes` value: a version byte (2), the key of the event's queue item (`u32`
/// length, then the bytes; empty when there is none), then the outcome in postcard's
/// compact binary form, with the plugin list replaced by the id of its plugin set (see
/// `plugin_sets`), scores, votes and calls naming their plugin by its position in
/// that set, and the final route given as the vote it came from. An outcome for the
/// example plugins takes about a third of the bytes its JSON took: sled's cost per
/// write grows with the bytes written (every 16 entries a leaf is split and rewritten),
/// and serializing JSON was itself a tenth of recording an outcome.
pub(crate) fn encode_outcome(
    outcome: &Outcome,
    set: u64,
    item_key: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let refs = &outcome.plugins;
    fn by_name<'a>(refs: &[PluginRef], name: &'a str) -> Slot<&'a str> {
        match refs.iter().position(|p| p.name == name) {
            Some(i) => Slot::Index(i as u32),
            None => Slot::Name(name),
        }
    }
    let route = match outcome.votes.iter().position(|v| v.route == outcome.route) {
        Some(i) => FinalRoute::Vote(i as u32),
        None => FinalRoute::Route(bin_route(&outcome.route)),
    };
    let shadow = if outcome.shadow.is_empty() {
        Vec::new()
    } else {
        encode(&outcome.shadow)?
    };
    let bin = BinOutcome {
        set,
        processed_at: outcome.processed_at,
        route,
        scores: outcome
            .scores
            .iter()
            .map(|s| BinScore {
                plugin: by_name(refs, &s.plugin),
                name: s.score.name.as_str(),
                value: s.score.value,
                label: s.score.label.as_deref(),
                reason: s.score.reason.as_deref(),
            })
            .collect(),
        votes: outcome
            .votes
            .iter()
            .map(|v| BinVote {
                plugin: by_name(refs, &v.plugin),
                route: bin_route(&v.route),
                imposed: v.imposed,
            })
            .collect(),
        calls: outcome
            .calls
            .iter()
            .map(|c| BinCall {
                plugin: match refs.iter().position(|p| *p == *c.plugin) {
                    Some(i) => RefSlot::Index(i as u32),
                    None => RefSlot::Full(
                        c.plugin.name.as_str(),
                        c.plugin.version.as_str(),
                        c.plugin.hash.as_str(),
                    ),
                },
                kind: kind_code(c.kind),
                duration_us: c.duration_us,
                error: c
                    .error
                    .as_ref()
                    .map(|e| (class_code(e.class), e.message.as_str())),
                failure_mode: c.failure_mode.map(mode_code),
            })
            .collect(),
        shadow: shadow.as_slice(),
    };
    let key = item_key.unwrap_or_default();
    let len = u32::try_from(key.len())
        .map_err(|_| StoreError::corrupt("outcome: queue item key over 4 GiB"))?;
    let mut out = Vec::with_capacity(512);
    out.push(OUTCOME_BINARY_V2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    postcard::to_io(&bin, &mut out)
        .map_err(|e| StoreError::corrupt(format!("cannot encode an outcome: {e}")))?;
    Ok(out)
}

/// An `outcomes` value back into the `Outcome` the API shows, in either layout;
/// `set` finds a plugin set by id.
pub(crate) fn decode_outcome(
    bytes: &[u8],
    set: impl FnOnce(u64) -> Result<std::sync::Arc<[PluginRef]>>,
) -> Result<Outcome> {
    match bytes.split_first() {
        Some((&OUTCOME_BINARY_V1, rest)) => decode_binary_outcome(rest, set),
        Some((&OUTCOME_BINARY_V2, rest)) => decode_binary_outcome(split_item_key(rest)?.1, set),
        _ => decode_json_outcome(bytes),
    }
}

fn decode_binary_outcome(
    bytes: &[u8],
    set: impl FnOnce(u64) -> Result<std::sync::Arc<[PluginRef]>>,
) -> Result<Outcome> {
    let corrupt = |what: &str| StoreError::corrupt(format!("outcome: {what}"));
    let bin: BinOutcome<String, String, Vec<u8>> =
        postcard::from_bytes(bytes).map_err(|e| corrupt(&e.to_string()))?;
    let refs = set(bin.set)?;
    let name = |slot: Slot<String>| match slot {
        Slot::Name(n) => Ok(n),
        Slot::Index(i) => refs
            .get(i as usize)
            .map(|p| p.name.clone())
            .ok_or_else(|| corrupt(&format!("names plugin {i} of {}", refs.len()))),
    };
    let votes = bin
        .votes
        .into_iter()
        .map(|v| {
            Ok(Vote {
                plugin: name(v.plugin)?,
                route: model_route(v.route),
                imposed: v.imposed,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let route = match bin.route {
        FinalRoute::Vote(i) => votes
            .get(i as usize)
            .map(|v| v.route.clone())
            .ok_or_else(|| corrupt(&format!("route names vote {i} of {}", votes.len())))?,
        FinalRoute::Route(r) => model_route(r),
    };
    let scores = bin
        .scores
        .into_iter()
        .map(|s| {
            Ok(ScoreRecord {
                plugin: name(s.plugin)?,
                score: flywheel_model::Score {
                    name: s.name,
                    value: s.value,
                    label: s.label,
                    reason: s.reason,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let calls = bin
        .calls
        .into_iter()
        .map(|c| {
            let plugin = match c.plugin {
                RefSlot::Full(name, version, hash) => PluginRef {
                    name,
                    version,
                    hash,
                },
                RefSlot::Index(i) => refs
                    .get(i as usize)
                    .cloned()
                    .ok_or_else(|| corrupt(&format!("call names plugin {i} of {}", refs.len())))?,
            };
            Ok(CallRecord {
                plugin: plugin.into(),
                kind: kind_from(c.kind).ok_or_else(|| corrupt("unknown plugin kind"))?,
                duration_us: c.duration_us,
                error: match c.error {
                    Some((class, message)) => Some(CallError {
                        class: class_from(class).ok_or_else(|| corrupt("unknown error class"))?,
                        message,
                    }),
                    None => None,
                },
                failure_mode: match c.failure_mode {
                    Some(m) => Some(mode_from(m).ok_or_else(|| corrupt("unknown failure mode"))?),
                    None => None,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let shadow = if bin.shadow.is_empty() {
        Vec::new()
    } else {
        decode("outcome shadow runs", &bin.shadow)?
    };
    Ok(Outcome {
        scores,
        votes,
        route,
        calls,
        plugins: refs,
        processed_at: bin.processed_at,
        shadow,
    })
}

/// The binary layout. Generic over its string and byte types so that one definition
/// serves encoding (borrowed) and decoding (owned): postcard writes both the same way.
#[derive(Serialize, Deserialize)]
struct BinOutcome<S, N, B> {
    set: u64,
    processed_at: u64,
    route: FinalRoute<S>,
    scores: Vec<BinScore<S, N>>,
    votes: Vec<BinVote<S, N>>,
    calls: Vec<BinCall<S>>,
    /// `Vec<ShadowRun>` as JSON (rare, and kept self-describing); empty when none.
    shadow: B,
}

/// A plugin named by its position in the outcome's plugin set, or by name.
#[derive(Serialize, Deserialize)]
enum Slot<N> {
    Index(u32),
    Name(N),
}

/// A build named by its position in the plugin set, or in full (name, version, hash).
#[derive(Serialize, Deserialize)]
enum RefSlot<S> {
    Index(u32),
    Full(S, S, S),
}

#[derive(Serialize, Deserialize)]
struct BinScore<S, N> {
    plugin: Slot<N>,
    name: S,
    value: f64,
    label: Option<S>,
    reason: Option<S>,
}

#[derive(Serialize, Deserialize)]
struct BinVote<S, N> {
    plugin: Slot<N>,
    route: BinRoute<S>,
    imposed: bool,
}

#[derive(Serialize, Deserialize)]
enum FinalRoute<S> {
    /// The same route as this vote's.
    Vote(u32),
    Route(BinRoute<S>),
}

#[derive(Serialize, Deserialize)]
enum BinRoute<S> {
    Accept,
    Label(S, u8, S),
    Review(S, u8, S),
    Drop(S),
}

#[derive(Serialize, Deserialize)]
struct BinCall<S> {
    plugin: RefSlot<S>,
    kind: u8,
    duration_us: u64,
    error: Option<(u8, S)>,
    failure_mode: Option<u8>,
}

fn bin_route(r: &Route) -> BinRoute<&str> {
    match r {
        Route::Accept => BinRoute::Accept,
        Route::Label(t) => BinRoute::Label(&t.queue, t.priority, &t.reason),
        Route::Review(t) => BinRoute::Review(&t.queue, t.priority, &t.reason),
        Route::Drop { reason } => BinRoute::Drop(reason),
    }
}

fn model_route(r: BinRoute<String>) -> Route {
    let target = |queue, priority, reason| QueueTarget {
        queue,
        priority,
        reason,
    };
    match r {
        BinRoute::Accept => Route::Accept,
        BinRoute::Label(q, p, why) => Route::Label(target(q, p, why)),
        BinRoute::Review(q, p, why) => Route::Review(target(q, p, why)),
        BinRoute::Drop(reason) => Route::Drop { reason },
    }
}

const KINDS: [PluginKind; 3] = [PluginKind::Scorer, PluginKind::Router, PluginKind::Refiner];
const MODES: [FailureMode; 2] = [FailureMode::FailOpen, FailureMode::FailClosed];

fn kind_code(k: PluginKind) -> u8 {
    KINDS.iter().position(|x| *x == k).unwrap_or_default() as u8
}

fn kind_from(c: u8) -> Option<PluginKind> {
    KINDS.get(usize::from(c)).copied()
}

fn class_code(k: ErrorClass) -> u8 {
    k.index() as u8
}

fn class_from(c: u8) -> Option<ErrorClass> {
    ErrorClass::ALL.get(usize::from(c)).copied()
}

fn mode_code(m: FailureMode) -> u8 {
    MODES.iter().position(|x| *x == m).unwrap_or_default() as u8
}

fn mode_from(c: u8) -> Option<FailureMode> {
    MODES.get(usize::from(c)).copied()
}

/// An outcome written as JSON (before the binary layout): with full plugin refs in
/// calls, or with a call naming its plugin by its index in `plugins`.
fn decode_json_outcome(bytes: &[u8]) -> Result<Outcome> {
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
                plugin: plugin.into(),
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
        plugins: stored.plugins.into(),
        processed_at: stored.processed_at,
        shadow: stored.shadow,
    })
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

/// When the event at a `log` key (as one number) was received.
pub(crate) fn log_received_at(position: u128) -> u64 {
    (position >> 64) as u64
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
