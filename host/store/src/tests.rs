#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::mpsc;

use flywheel_model::{
    Event, EventStatus, Feedback, Outcome, PromptRef, QueueTarget, Route, Thumb, now_ms,
};
use tempfile::TempDir;

use super::*;
use crate::history::History;

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path(), StoreOptions::default()).unwrap()
}

fn event(id: &str, received_at: u64) -> Event {
    Event {
        id: id.into(),
        received_at,
        trace_id: None,
        session_id: None,
        user_id: Some("u1".into()),
        model: None,
        prompt: Some(PromptRef {
            name: "support".into(),
            version: "v1".into(),
        }),
        input: "how do I reset my password?".into(),
        output: "Click 'forgot password'.".into(),
        context: vec![],
        feedback: Feedback::Thumbs { value: Thumb::Down },
        metadata: BTreeMap::new(),
    }
}

fn outcome(route: Route) -> Outcome {
    Outcome {
        scores: vec![],
        votes: vec![],
        route,
        calls: vec![],
        plugins: Vec::new().into(),
        processed_at: now_ms(),
        shadow: vec![],
    }
}

fn target(queue: &str, priority: u8) -> QueueTarget {
    QueueTarget {
        queue: queue.into(),
        priority,
        reason: format!("p{priority}"),
    }
}

fn accepted(id: &str) -> Appended {
    Appended::Accepted { id: id.into() }
}

fn duplicate(id: &str) -> Appended {
    Appended::Duplicate { id: id.into() }
}

#[test]
fn append_then_get_round_trips() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let e = event("e1", 1_000);
    assert_eq!(store.append(vec![e.clone()]).unwrap(), vec![accepted("e1")]);
    let r = store.get("e1").unwrap().unwrap();
    assert_eq!(r.event, e);
    assert_eq!(r.status, EventStatus::Pending);
    assert_eq!(r.outcome, None);
    assert_eq!(store.get("nope").unwrap(), None);
    assert_eq!(store.count(), 1);
    assert_eq!(store.append(vec![]).unwrap(), vec![]);
    assert!(matches!(
        store.append(vec![event("", 1)]),
        Err(StoreError::InvalidEvent { .. })
    ));
}

#[test]
fn duplicates_are_reported_and_never_overwrite() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let original = event("a", 1);
    store.append(vec![original.clone()]).unwrap();

    let mut changed = event("a", 2);
    changed.input = "something else".into();
    let mut twin = event("b", 3);
    twin.input = "second b".into();
    let got = store
        .append(vec![changed, event("b", 3), twin, event("c", 4)])
        .unwrap();
    assert_eq!(
        got,
        vec![duplicate("a"), accepted("b"), duplicate("b"), accepted("c")]
    );
    assert_eq!(store.get("a").unwrap().unwrap().event, original);
    assert_eq!(store.get("b").unwrap().unwrap().event, event("b", 3));
    assert_eq!(store.count(), 3);
    assert_eq!(store.pending().unwrap(), vec!["a", "b", "c"]);
    assert_eq!(store.stats().duplicates, 2);
}

#[test]
fn concurrent_appends_share_flushes() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let id = format!("t{t}-{i}");
                    let got = store.append(vec![event(&id, now_ms())]).unwrap();
                    assert_eq!(got, vec![accepted(&id)]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.count(), 4000);
    for t in 0..8 {
        for i in 0..500 {
            assert!(store.get(&format!("t{t}-{i}")).unwrap().is_some());
        }
    }
    let stats = store.stats();
    assert_eq!(stats.requests, 4000);
    assert_eq!(stats.appended, 4000);
    assert_eq!(stats.flushes, stats.batches);
    assert!(stats.flushes < stats.requests, "{stats:?}");
}

#[test]
fn queued_appends_are_committed_in_few_batches() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (tx, rx) = mpsc::channel();
    for i in 0..2000 {
        let tx = tx.clone();
        store.append_with(vec![event(&format!("e{i}"), i)], move |r, _| {
            tx.send(r).unwrap();
        });
    }
    drop(tx);
    let replies: Vec<_> = rx.iter().collect();
    assert_eq!(replies.len(), 2000);
    assert!(replies.iter().all(|r| matches!(r, Ok(v) if v.len() == 1)));
    let stats = store.stats();
    assert!(stats.flushes * 10 < stats.requests, "{stats:?}");
    assert_eq!(store.pending().unwrap().len(), 2000);
}

#[test]
fn not_durable_never_flushes_per_batch() {
    let dir = TempDir::new().unwrap();
    let opts = StoreOptions {
        durable: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    store.append(vec![event("x", 1)]).unwrap();
    assert_eq!(store.stats().flushes, 0);
    assert_eq!(store.stats().batches, 1);
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let events: Vec<_> = (0..10).map(|i| event(&format!("e{i}"), 100 + i)).collect();
        store.append(events).unwrap();
        store
            .complete("e3", &outcome(Route::Review(target("triage", 7))))
            .unwrap();
        store.kv_set("p", "k", b"v", 100).unwrap();
        store.meta_set("prompts", "support", b"tmpl").unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.count(), 10);
    assert_eq!(store.pending().unwrap().len(), 9);
    assert_eq!(
        store.get("e3").unwrap().unwrap().status,
        EventStatus::Processed
    );
    assert_eq!(store.queue_depths().unwrap()["triage"], 1);
    assert_eq!(store.kv_get("p", "k").unwrap().unwrap(), b"v");
    assert_eq!(store.kv_usage("p").unwrap(), 2);
    assert_eq!(
        store.meta_get("prompts", "support").unwrap().unwrap(),
        b"tmpl"
    );
    // Arrival order continues after the events still pending.
    store.append(vec![event("late", 1)]).unwrap();
    assert_eq!(store.pending().unwrap().last().unwrap(), "late");
    assert_eq!(
        store.append(vec![event("e0", 1)]).unwrap(),
        vec![duplicate("e0")]
    );
}

#[test]
fn a_directory_in_use_is_refused_and_free_again_once_dropped() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.append(vec![event("a", 1)]).unwrap();
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StoreError::Locked { .. })
    ));
    // Dropped and reopened at once, again and again: `open` waits out sled's threads.
    drop(store);
    for _ in 0..5 {
        let store = open(&dir);
        assert!(store.get("a").unwrap().is_some());
    }
}

#[test]
fn complete_is_once_and_queues_label_and_review() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let ids = ["a", "b", "c", "d", "e", "f"];
    store
        .append(ids.iter().map(|id| event(id, 10)).collect())
        .unwrap();
    assert_eq!(store.pending().unwrap(), ids);

    assert_eq!(
        store.complete("a", &outcome(Route::Accept)).unwrap(),
        Completion::Completed { queue_item: None }
    );
    assert_eq!(
        store
            .complete("a", &outcome(Route::Review(target("q", 1))))
            .unwrap(),
        Completion::AlreadyProcessed
    );
    let r = store.get("a").unwrap().unwrap();
    assert_eq!(r.status, EventStatus::Processed);
    assert_eq!(r.outcome.unwrap().route, Route::Accept);

    let Completion::Completed {
        queue_item: Some(item),
    } = store
        .complete("b", &outcome(Route::Label(target("q", 10))))
        .unwrap()
    else {
        panic!("expected a queue item");
    };
    assert_eq!(
        (
            item.queue.as_str(),
            item.event_id.as_str(),
            item.action.as_str()
        ),
        ("q", "b", "label")
    );
    store
        .complete("c", &outcome(Route::Review(target("q", 90))))
        .unwrap();
    store
        .complete("d", &outcome(Route::Label(target("q", 10))))
        .unwrap();
    store
        .complete("e", &outcome(Route::Review(target("other", 5))))
        .unwrap();
    store
        .complete(
            "f",
            &outcome(Route::Drop {
                reason: "spam".into(),
            }),
        )
        .unwrap();

    assert!(store.pending().unwrap().is_empty());
    let order: Vec<_> = store
        .queue_items("q", 10)
        .unwrap()
        .into_iter()
        .map(|i| i.event_id)
        .collect();
    assert_eq!(order, ["c", "b", "d"]);
    assert_eq!(store.queue_items("q", 1).unwrap().len(), 1);
    assert!(store.queue_items("none", 10).unwrap().is_empty());
    let depths = store.queue_depths().unwrap();
    assert_eq!(
        depths,
        BTreeMap::from([("other".into(), 1), ("q".into(), 3)])
    );

    assert!(matches!(
        store.complete("zzz", &outcome(Route::Accept)),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.complete("a", &outcome(Route::Label(target("bad\0q", 1)))),
        Err(StoreError::InvalidName { .. })
    ));
}

#[test]
fn complete_all_is_one_transaction_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let ids = ["a", "b", "c", "d"];
        store
            .append(ids.iter().map(|id| event(id, 10)).collect())
            .unwrap();
        let accept = outcome(Route::Accept);
        let label = outcome(Route::Label(target("q", 10)));
        let review = outcome(Route::Review(target("q", 50)));

        // One unknown id sinks the whole batch: nothing is recorded.
        assert!(matches!(
            store.complete_all(&[("a", &accept), ("nope", &accept)]),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.pending().unwrap(), ids);

        let done = store
            .complete_all(&[("a", &accept), ("b", &label), ("c", &review), ("a", &label)])
            .unwrap();
        assert_eq!(done[0], Completion::Completed { queue_item: None });
        assert!(matches!(
            &done[1],
            Completion::Completed { queue_item: Some(i) } if i.event_id == "b"
        ));
        assert!(matches!(
            &done[2],
            Completion::Completed {
                queue_item: Some(_)
            }
        ));
        assert_eq!(done[3], Completion::AlreadyProcessed);
        assert_eq!(store.pending().unwrap(), ["d"]);
        assert_eq!(
            store.queue_depths().unwrap(),
            BTreeMap::from([("q".into(), 2)])
        );
        store.flush().unwrap();
    }
    let store = open(&dir);
    let a = store.get("a").unwrap().unwrap();
    assert_eq!(
        (a.status, a.outcome.map(|o| o.route)),
        (EventStatus::Processed, Some(Route::Accept))
    );
    let d = store.get("d").unwrap().unwrap();
    assert_eq!((d.status, d.outcome), (EventStatus::Pending, None));
    assert_eq!(store.pending().unwrap(), ["d"]);
    assert_eq!(
        store.complete("b", &outcome(Route::Accept)).unwrap(),
        Completion::AlreadyProcessed
    );
}

#[test]
fn the_backlog_is_counted_exactly_across_duplicates_reopen_and_old_stores() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        store
            .append(
                ["a", "b", "c", "a"]
                    .iter()
                    .map(|id| event(id, 10))
                    .collect(),
            )
            .unwrap();
        assert_eq!(
            (store.count(), store.processed(), store.unprocessed()),
            (3, 0, 3)
        );
        let accept = outcome(Route::Accept);
        // A second outcome for the same event, in the batch or later, is not counted.
        store
            .complete_all(&[("a", &accept), ("a", &accept)])
            .unwrap();
        store.complete("a", &accept).unwrap();
        store
            .complete("b", &outcome(Route::Label(target("q", 1))))
            .unwrap();
        assert_eq!((store.processed(), store.unprocessed()), (2, 1));
        store.append(vec![event("b", 10)]).unwrap();
        assert_eq!(store.unprocessed(), 1);
        store.flush().unwrap();
    }
    {
        let store = open(&dir);
        assert_eq!(
            (store.count(), store.processed(), store.unprocessed()),
            (3, 2, 1)
        );
        // A store written before the counter existed: counted once from the outcomes.
        store.trees().counters.remove(PROCESSED_COUNTER).unwrap();
        store.flush().unwrap();
    }
    let store = open(&dir);
    assert_eq!((store.processed(), store.unprocessed()), (2, 1));
    assert!(
        store
            .trees()
            .counters
            .get(PROCESSED_COUNTER)
            .unwrap()
            .is_some()
    );
    store.complete("c", &outcome(Route::Accept)).unwrap();
    assert_eq!((store.processed(), store.unprocessed()), (3, 0));
}

#[test]
fn complete_with_answers_each_item_and_leaves_the_flush_to_the_next_write() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let ids = ["a", "b", "c"];
        store
            .append(ids.iter().map(|id| event(id, 10)).collect())
            .unwrap();
        let accept = outcome(Route::Accept);
        let label = outcome(Route::Label(target("q", 10)));
        let bad = outcome(Route::Label(target("bad\0q", 1)));
        let flushes = store.stats().flushes;
        let (tx, rx) = mpsc::channel();
        store.complete_with(
            &[
                ("a", &accept),
                ("nope", &accept),
                ("b", &label),
                ("c", &bad),
                ("a", &label),
            ],
            move |results| tx.send(results).unwrap(),
        );
        let results = rx.recv().unwrap();
        assert_eq!(
            store.stats().flushes,
            flushes,
            "a batch of the pipeline's outcomes alone is not flushed"
        );
        assert_eq!(results.len(), 5);
        assert_eq!(
            results[0].as_ref().unwrap(),
            &Completion::Completed { queue_item: None }
        );
        assert!(matches!(results[1], Err(StoreError::NotFound { .. })));
        assert!(matches!(
            results[2].as_ref().unwrap(),
            Completion::Completed { queue_item: Some(i) } if i.event_id == "b"
        ));
        assert!(matches!(results[3], Err(StoreError::InvalidName { .. })));
        assert_eq!(results[4].as_ref().unwrap(), &Completion::AlreadyProcessed);
        // Nothing to send: the reply comes at once.
        let (tx, rx) = mpsc::channel();
        store.complete_with(&[("zzz", &accept)], move |r| tx.send(r).unwrap());
        assert!(matches!(
            rx.recv().unwrap()[0],
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(store.pending().unwrap(), ["c"]);
        // The next acknowledged append flushes, and with it every outcome before it.
        store.append(vec![event("d", 10)]).unwrap();
        assert_eq!(store.stats().flushes, flushes + 1);
        // `complete_all` (`?wait=true`) answers only once flushed.
        store.complete_all(&[("d", &accept)]).unwrap();
        assert_eq!(store.stats().flushes, flushes + 2);
    }
    let store = open(&dir);
    assert_eq!(store.pending().unwrap(), ["c"]);
    assert_eq!(
        store.queue_depths().unwrap(),
        BTreeMap::from([("q".into(), 1)])
    );
    assert_eq!(
        store.get("a").unwrap().unwrap().outcome.map(|o| o.route),
        Some(Route::Accept)
    );
}

#[test]
fn pending_pages_walk_the_backlog_in_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let ids: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    store
        .append(ids.iter().map(|id| event(id, 10)).collect())
        .unwrap();
    store.complete("p3", &outcome(Route::Accept)).unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.pending_page(after, 4).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        after = page.last().map(|(seq, _)| *seq);
        seen.extend(page.into_iter().map(|(_, id)| id));
    }
    let expected: Vec<String> = ids.into_iter().filter(|id| id != "p3").collect();
    assert_eq!(seen, expected);
    assert_eq!(store.pending().unwrap(), expected);
}

#[test]
fn arrival_time_never_goes_back_so_the_log_only_grows() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // Stamped out of order (a slow request, a clock step): stored in commit order.
    store.append(vec![event("late", 500)]).unwrap();
    store.append(vec![event("early", 100)]).unwrap();
    assert_eq!(store.get("early").unwrap().unwrap().event.received_at, 500);
    assert_eq!(store.pending().unwrap(), ["late", "early"]);
    let page = store.list(&EventFilter::default(), None, 10).unwrap();
    let newest_first: Vec<_> = page.events.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(newest_first, ["early", "late"]);
}

#[test]
fn the_pending_watermark_moves_past_processed_events_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    {
        let store = open(&dir);
        store
            .append(ids.iter().map(|id| event(id, 10)).collect())
            .unwrap();
        assert_eq!(store.advance_watermark().unwrap(), 0);
        for id in ["w0", "w1", "w3"] {
            store.complete(id, &outcome(Route::Accept)).unwrap();
        }
        // Up to w2, the first event still pending; w3 is processed but behind it.
        let mark = store.advance_watermark().unwrap();
        assert!(mark > 0);
        assert_eq!(store.pending().unwrap(), ["w2", "w4", "w5"]);
        store.flush().unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.pending().unwrap(), ["w2", "w4", "w5"]);
    for id in ["w2", "w4", "w5"] {
        store.complete(id, &outcome(Route::Accept)).unwrap();
    }
    assert!(store.pending().unwrap().is_empty());
    // Everything is behind the watermark now; what comes next is still found.
    store.append(vec![event("next", 1)]).unwrap();
    assert_eq!(store.pending().unwrap(), ["next"]);
    assert_eq!(
        store
            .list(&EventFilter::default(), None, 100)
            .unwrap()
            .events
            .len(),
        7
    );
}

#[test]
fn a_store_in_the_first_layout_is_converted_at_open() {
    let dir = TempDir::new().unwrap();
    // Written the way the first layout did: `pending` by seq, `by_time` by time ++ id.
    {
        let db = sled::open(dir.path()).unwrap();
        let (events, outcomes) = (
            db.open_tree("events").unwrap(),
            db.open_tree("outcomes").unwrap(),
        );
        let (pending, by_time) = (
            db.open_tree("pending").unwrap(),
            db.open_tree("by_time").unwrap(),
        );
        let counters = db.open_tree("counters").unwrap();
        // Arrival times not in seq order, as the first layout allowed.
        for (seq, (id, at)) in [("old-a", 300u64), ("old-b", 100), ("old-c", 200)]
            .iter()
            .enumerate()
        {
            let seq = seq as u64;
            events
                .insert(id, codec::encode_event(seq, &event(id, *at), &[]).unwrap())
                .unwrap();
            let mut time_key = at.to_be_bytes().to_vec();
            time_key.extend_from_slice(id.as_bytes());
            by_time.insert(time_key, &[][..]).unwrap();
            if *id == "old-b" {
                outcomes
                    .insert(id, codec::encode(&outcome(Route::Accept)).unwrap())
                    .unwrap();
            } else {
                pending.insert(seq.to_be_bytes(), id.as_bytes()).unwrap();
            }
        }
        counters
            .insert(EVENTS_COUNTER, &3u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    {
        let store = open(&dir);
        assert_eq!(store.count(), 3);
        // Oldest arrival first.
        assert_eq!(store.pending().unwrap(), ["old-c", "old-a"]);
        let page = store.list(&EventFilter::default(), None, 10).unwrap();
        let newest_first: Vec<_> = page.events.iter().map(|r| r.event.id.as_str()).collect();
        assert_eq!(newest_first, ["old-a", "old-c", "old-b"]);
        store.append(vec![event("new", 50)]).unwrap();
        assert_eq!(store.pending().unwrap(), ["old-c", "old-a", "new"]);
        assert_eq!(
            store.complete("old-b", &outcome(Route::Accept)).unwrap(),
            Completion::AlreadyProcessed
        );
        let names = store.db().tree_names();
        assert!(
            !names
                .iter()
                .any(|n| n.as_ref() == b"by_time" || n.as_ref() == b"pending")
        );
    }
    // Converted once: a second open finds the new layout and the same state.
    let store = open(&dir);
    assert_eq!(store.pending().unwrap(), ["old-c", "old-a", "new"]);
    assert_eq!(store.count(), 4);
}

#[test]
fn outcomes_are_stored_compactly_and_old_ones_still_decode() {
    use flywheel_model::{
        CallError, CallRecord, ErrorClass, FailureMode, PluginKind, PluginRef, Score, ScoreRecord,
        ShadowRun, Vote,
    };
    let plugin = |name: &str| PluginRef {
        name: name.into(),
        version: "1.0.0".into(),
        hash: name.repeat(64 / name.len() + 1)[..64].to_owned(),
    };
    let review = Route::Review(target("compliance", 95));
    let mut o = outcome(review.clone());
    o.plugins = vec![plugin("scorer"), plugin("router")].into();
    o.scores = vec![
        ScoreRecord {
            plugin: "scorer".into(),
            score: Score {
                name: "sensitive".into(),
                value: 0.93,
                label: Some("pii:email".into()),
                reason: Some("email j***@***.com in the answer".into()),
            },
        },
        // A scorer not in `plugins` keeps its name.
        ScoreRecord {
            plugin: "elsewhere".into(),
            score: Score {
                name: "x".into(),
                value: 0.0,
                label: None,
                reason: None,
            },
        },
    ];
    o.votes = vec![
        Vote {
            plugin: "router".into(),
            route: Route::Accept,
            imposed: false,
        },
        Vote {
            plugin: "scorer".into(),
            route: review.clone(),
            imposed: true,
        },
    ];
    o.calls = vec![
        CallRecord {
            plugin: plugin("scorer").into(),
            kind: PluginKind::Scorer,
            duration_us: 12,
            error: None,
            failure_mode: None,
        },
        CallRecord {
            plugin: plugin("router").into(),
            kind: PluginKind::Router,
            duration_us: 40,
            error: Some(CallError {
                class: ErrorClass::Trap,
                message: "unreachable".into(),
            }),
            failure_mode: Some(FailureMode::FailClosed),
        },
        // A call whose plugin is not in `plugins` keeps its full reference.
        CallRecord {
            plugin: plugin("other").into(),
            kind: PluginKind::Refiner,
            duration_us: 3,
            error: None,
            failure_mode: None,
        },
    ];
    o.shadow = vec![ShadowRun {
        candidate: plugin("router2"),
        replaces: Some(plugin("router")),
        scores: vec![],
        votes: vec![],
        route: Route::Drop {
            reason: "spam".into(),
        },
        agrees: false,
        calls: vec![],
    }];
    let full = codec::encode(&o).unwrap();
    let binary = codec::encode_outcome(&o, 7, None).unwrap();
    assert!(
        binary.len() * 2 < full.len(),
        "{} vs {}",
        binary.len(),
        full.len()
    );
    let refs: std::sync::Arc<[PluginRef]> = o.plugins.clone();
    assert_eq!(
        codec::decode_outcome(&binary, |_| Ok(refs.clone())).unwrap(),
        o
    );
    let no_set = |_| -> Result<std::sync::Arc<[PluginRef]>> { panic!("JSON needs no plugin set") };
    assert_eq!(codec::decode_outcome(&full, no_set).unwrap(), o);
    // The JSON layout in which calls name their plugin by index.
    let mut indexed: serde_json::Value = serde_json::from_slice(&full).unwrap();
    indexed["calls"][0]["plugin"] = 0.into();
    indexed["calls"][1]["plugin"] = 1.into();
    let indexed = serde_json::to_vec(&indexed).unwrap();
    assert_eq!(codec::decode_outcome(&indexed, no_set).unwrap(), o);
    assert!(codec::decode_outcome(br#"{"scores":[],"votes":[],"route":{"action":"accept"},"calls":[{"plugin":5,"kind":"scorer","duration_us":1}],"plugins":[],"processed_at":1}"#, no_set).is_err());
    assert!(codec::decode_outcome(&binary[..binary.len() / 2], |_| Ok(refs.clone())).is_err());
    assert_eq!(
        codec::outcome_item_key(&binary).unwrap(),
        codec::ItemKey::Known(None)
    );
    // With the queue item's key in front; and the layout before it (V1), which names none.
    let keyed = codec::encode_outcome(&o, 7, Some(b"q\0key")).unwrap();
    assert_eq!(
        codec::outcome_item_key(&keyed).unwrap(),
        codec::ItemKey::Known(Some(&b"q\0key"[..]))
    );
    assert_eq!(
        codec::decode_outcome(&keyed, |_| Ok(refs.clone())).unwrap(),
        o
    );
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&binary[5..]);
    assert_eq!(codec::decode_outcome(&v1, |_| Ok(refs.clone())).unwrap(), o);
    assert_eq!(
        codec::outcome_item_key(&v1).unwrap(),
        codec::ItemKey::Unknown
    );
    assert_eq!(
        codec::outcome_item_key(&full).unwrap(),
        codec::ItemKey::Unknown
    );

    // Through the store: the plugin set is stored once and survives a reopen; a route
    // that is no vote's is kept as it is.
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        store.append(vec![event("c", 1), event("d", 2)]).unwrap();
        store.complete("c", &o).unwrap();
        let mut plain = outcome(Route::Drop {
            reason: "test traffic".into(),
        });
        plain.plugins = o.plugins.clone();
        store.complete("d", &plain).unwrap();
        assert_eq!(store.get("d").unwrap().unwrap().outcome, Some(plain));
    }
    let store = open(&dir);
    assert_eq!(store.get("c").unwrap().unwrap().outcome, Some(o));
    assert_eq!(store.trees().plugin_sets.len(), 1);
}

/// 250 events at times 1000..1250; every 5th has a rating, prompt v2 for odd ones.
fn seeded() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let events = (0..250u64)
        .map(|i| {
            let mut e = event(&format!("e{i:03}"), 1000 + i);
            if i % 5 == 0 {
                e.feedback = Feedback::Rating {
                    value: 2.0,
                    scale: 5.0,
                };
            }
            if i % 2 == 1 {
                e.prompt = Some(PromptRef {
                    name: "support".into(),
                    version: "v2".into(),
                });
            }
            e
        })
        .collect();
    store.append(events).unwrap();
    store
        .complete("e010", &outcome(Route::Review(target("triage", 1))))
        .unwrap();
    store
        .complete("e020", &outcome(Route::Label(target("gold", 1))))
        .unwrap();
    store.complete("e030", &outcome(Route::Accept)).unwrap();
    (dir, store)
}

fn ids(page: &Page) -> Vec<&str> {
    page.events.iter().map(|r| r.event.id.as_str()).collect()
}

#[test]
fn list_pages_newest_first() {
    let (_dir, store) = seeded();
    let all = EventFilter::default();
    let p1 = store.list(&all, None, 100).unwrap();
    assert_eq!(p1.events.len(), 100);
    assert_eq!(p1.events[0].event.id, "e249");
    // An append between pages does not disturb the next page.
    store.append(vec![event("newer", 5000)]).unwrap();
    let p2 = store.list(&all, p1.next_cursor.as_deref(), 100).unwrap();
    assert_eq!(p2.events[0].event.id, "e149");
    let p3 = store.list(&all, p2.next_cursor.as_deref(), 100).unwrap();
    assert_eq!(p3.events.len(), 50);
    assert_eq!(p3.events.last().unwrap().event.id, "e000");
    assert_eq!(p3.next_cursor, None);
    // Not hex, empty, or hex of another length: not a cursor this listing gave out.
    for bad in ["not hex", "", "00ff", &"ab".repeat(17)] {
        assert!(
            matches!(
                store.list(&all, Some(bad), 10),
                Err(StoreError::InvalidCursor)
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn list_applies_each_filter() {
    let (_dir, store) = seeded();
    let count = |f: EventFilter| store.list(&f, None, 1000).unwrap().events.len();

    let time = EventFilter {
        from_ms: Some(1100),
        to_ms: Some(1110),
        ..Default::default()
    };
    let page = store.list(&time, None, 100).unwrap();
    assert_eq!(ids(&page).first(), Some(&"e109"));
    assert_eq!(ids(&page).last(), Some(&"e100"));
    assert_eq!(page.events.len(), 10);

    let v2 = EventFilter {
        prompt_name: Some("support".into()),
        prompt_version: Some("v2".into()),
        ..Default::default()
    };
    assert_eq!(count(v2), 125);
    let other = EventFilter {
        prompt_name: Some("other".into()),
        ..Default::default()
    };
    assert_eq!(count(other), 0);
    let rating = EventFilter {
        feedback: Some("rating".into()),
        ..Default::default()
    };
    assert_eq!(count(rating), 50);
    let route = |r: &str| EventFilter {
        route: Some(r.into()),
        ..Default::default()
    };
    assert_eq!(count(route("pending")), 247);
    assert_eq!(count(route("review")), 1);
    assert_eq!(count(route("label")), 1);
    assert_eq!(count(route("accept")), 1);
    assert_eq!(count(route("drop")), 0);
    assert!(matches!(
        store.list(&route("maybe"), None, 10),
        Err(StoreError::InvalidFilter { .. })
    ));
    let triage = EventFilter {
        queue: Some("triage".into()),
        ..Default::default()
    };
    let page = store.list(&triage, None, 10).unwrap();
    assert_eq!(ids(&page), ["e010"]);

    // Filters with cursors: 50 ratings in pages of 20.
    let rating = EventFilter {
        feedback: Some("rating".into()),
        ..Default::default()
    };
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let page = store.list(&rating, cursor.as_deref(), 20).unwrap();
        seen.extend(page.events.into_iter().map(|r| r.event.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(seen.first().unwrap(), "e245");
    assert_eq!(seen.last().unwrap(), "e000");
}

#[test]
fn list_filters_by_user_session_trace_and_model() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let events = (0..6u64)
        .map(|i| {
            let mut e = event(&format!("x{i}"), 100 + i);
            e.user_id = Some(format!("u{}", i % 2));
            e.session_id = Some(format!("s{}", i % 3));
            e.trace_id = Some(format!("t{i}"));
            e.model = (i < 2).then(|| "gpt-4o-mini".to_string());
            e
        })
        .collect();
    store.append(events).unwrap();
    let list = |f: EventFilter| -> Vec<String> {
        let page = store.list(&f, None, 100).unwrap();
        ids(&page).into_iter().map(String::from).collect()
    };
    let some = |s: &str| Some(s.to_string());
    let user = EventFilter {
        user_id: some("u1"),
        ..Default::default()
    };
    assert_eq!(list(user), ["x5", "x3", "x1"]);
    let both = EventFilter {
        user_id: some("u0"),
        session_id: some("s0"),
        ..Default::default()
    };
    assert_eq!(list(both), ["x0"]);
    let trace = EventFilter {
        trace_id: some("t4"),
        ..Default::default()
    };
    assert_eq!(list(trace), ["x4"]);
    let model = EventFilter {
        model: some("gpt-4o-mini"),
        ..Default::default()
    };
    assert_eq!(list(model), ["x1", "x0"]);
}

#[test]
fn filters_find_values_json_escapes_or_that_others_contain() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // Values serde_json escapes (quote, backslash, control characters) or writes as is
    // (other Unicode, slashes), and values that are part of other values.
    let users = [
        "say \"hi\"",
        "back\\slash",
        "tab\there",
        "zoë/ß 🦀",
        "del\u{7f} nbsp\u{a0} ls\u{2028}",
        "u7",
        "u70",
        "xu7",
    ];
    let events = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let mut e = event(&format!("x{i}"), 100 + i as u64);
            e.user_id = Some((*user).to_string());
            e.prompt = Some(PromptRef {
                name: format!("p \"{i}\""),
                version: (*user).to_string(),
            });
            e
        })
        .collect();
    store.append(events).unwrap();
    for (i, user) in users.iter().enumerate() {
        let by_user = EventFilter {
            user_id: Some((*user).to_string()),
            ..Default::default()
        };
        let page = store.list(&by_user, None, 100).unwrap();
        assert_eq!(ids(&page), [format!("x{i}")], "{user:?}");
        assert_eq!(store.scan(&by_user).count(), 1, "{user:?}");
        let by_prompt = EventFilter {
            prompt_name: Some(format!("p \"{i}\"")),
            prompt_version: Some((*user).to_string()),
            ..Default::default()
        };
        assert_eq!(store.scan(&by_prompt).count(), 1, "{user:?}");
    }
    // A value stored in another field only is no match.
    let in_output = EventFilter {
        user_id: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(store.scan(&in_output).count(), 0);
}

#[test]
fn a_list_page_stops_at_its_scan_budget_and_says_where_to_go_on() {
    let (_dir, store) = seeded();
    // 50 ratings among 250 events (every 5th); each page looks at 30 events at most.
    let rating = EventFilter {
        feedback: Some("rating".into()),
        ..Default::default()
    };
    let (mut cursor, mut seen, mut pages) = (None, Vec::new(), 0);
    loop {
        let page = store
            .list_within(&rating, cursor.as_deref(), 20, 30)
            .unwrap();
        assert!(page.events.len() <= 6, "30 events hold at most 6 ratings");
        pages += 1;
        seen.extend(page.events.into_iter().map(|r| r.event.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 9);
    assert_eq!(seen.len(), 50);
    assert_eq!(seen.first().unwrap(), "e245");
    assert_eq!(seen.last().unwrap(), "e000");
    // A filter that matches nothing answers an empty page and where to go on.
    let nobody = EventFilter {
        user_id: Some("nobody".into()),
        ..Default::default()
    };
    let page = store.list_within(&nobody, None, 10, 30).unwrap();
    assert!(page.events.is_empty());
    assert!(page.next_cursor.is_some());
}

#[test]
fn scan_is_oldest_first_and_filtered() {
    let (_dir, store) = seeded();
    let f = EventFilter {
        from_ms: Some(1240),
        ..Default::default()
    };
    let got: Vec<_> = store.scan(&f).map(|r| r.unwrap().event.id).collect();
    assert_eq!(got.len(), 10);
    assert_eq!(got.first().unwrap(), "e240");
    assert_eq!(got.last().unwrap(), "e249");
    assert_eq!(store.scan(&EventFilter::default()).count(), 250);
    let bad = EventFilter {
        route: Some("nope".into()),
        ..Default::default()
    };
    let inverted = EventFilter {
        from_ms: Some(1200),
        to_ms: Some(1100),
        ..Default::default()
    };
    assert_eq!(store.scan(&inverted).count(), 0);
    assert!(store.list(&inverted, None, 10).unwrap().events.is_empty());
    let got: Vec<_> = store.scan(&bad).collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_err());
}

#[test]
fn kv_enforces_quota_and_tracks_usage() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.kv_set("p", "key", b"12345", 10).unwrap(); // 3 + 5
    assert_eq!(store.kv_usage("p").unwrap(), 8);
    assert!(matches!(
        store.kv_set("p", "k2", b"12", 10),
        Err(KvError::QuotaExceeded { quota: 10 })
    ));
    assert_eq!(store.kv_get("p", "k2").unwrap(), None);
    assert_eq!(store.kv_usage("p").unwrap(), 8);
    // Overwrite counts the new value only.
    store.kv_set("p", "key", b"1234567", 10).unwrap();
    assert_eq!(store.kv_usage("p").unwrap(), 10);
    store.kv_set("p", "key", b"1", 10).unwrap();
    assert_eq!(store.kv_usage("p").unwrap(), 4);
    store.kv_set("p", "k2", b"12", 10).unwrap();
    assert_eq!(store.kv_usage("p").unwrap(), 8);
    // Other plugins have their own usage.
    store.kv_set("q", "key", b"1234567", 10).unwrap();
    assert_eq!(store.kv_usage("q").unwrap(), 10);
    assert_eq!(store.kv_usage("p").unwrap(), 8);

    store.kv_delete("p", "key").unwrap();
    store.kv_delete("p", "missing").unwrap();
    assert_eq!(store.kv_usage("p").unwrap(), 4);
    assert_eq!(store.kv_get("p", "key").unwrap(), None);
    assert_eq!(
        store.kv_snapshot("p").unwrap(),
        vec![("k2".to_string(), b"12".to_vec())]
    );
    // A shrinking write is allowed even over a lowered quota.
    store.kv_set("q", "key", b"12", 3).unwrap();
    assert_eq!(store.kv_usage("q").unwrap(), 5);

    assert!(matches!(
        store.kv_set("p", "", b"x", 10),
        Err(KvError::InvalidKey)
    ));
    assert!(matches!(
        store.kv_set("a\0b", "k", b"x", 10),
        Err(KvError::InvalidKey)
    ));
    let long = "k".repeat(kv::MAX_KV_KEY_BYTES + 1);
    assert!(matches!(
        store.kv_set("p", &long, b"", u64::MAX),
        Err(KvError::InvalidKey)
    ));
}

#[test]
fn kv_keys_page_by_prefix_and_clear_keeps_usage_exact() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let quota = u64::MAX;
    // More keys than one clear transaction takes, around the prefix's edges.
    for i in 0..1_200u32 {
        store
            .kv_set("p", &format!("user:{i:05}"), &i.to_be_bytes(), quota)
            .unwrap();
    }
    for key in ["user", "user;", "users:1", "a", "zz"] {
        store.kv_set("p", key, b"xy", quota).unwrap();
    }
    // Another plugin, whose name is a prefix of the first's: never seen from `p`.
    store.kv_set("p-2", "user:00001", b"other", quota).unwrap();
    store.kv_set("pp", "user:00001", b"other", quota).unwrap();

    let first = store.kv_keys("p", "user:", None, 3).unwrap();
    let names: Vec<_> = first.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names, ["user:00000", "user:00001", "user:00002"]);
    assert_eq!(first.keys[0].value_bytes, 4);
    assert_eq!(first.next.as_deref(), Some("user:00002"));
    // Walking every page gives each key once, in order, and ends.
    let (mut all, mut after) = (Vec::new(), None::<String>);
    loop {
        let page = store.kv_keys("p", "user:", after.as_deref(), 500).unwrap();
        all.extend(page.keys.into_iter().map(|k| k.key));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len(), 1_200);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    // An exact last page says so: no `next`.
    let last = store.kv_keys("p", "user:", Some("user:01196"), 3).unwrap();
    assert_eq!(last.keys.len(), 3);
    assert_eq!(last.next, None);
    // `after` before the prefix starts at the prefix; after it, nothing.
    let from_a = store.kv_keys("p", "user:", Some("a"), 1).unwrap();
    assert_eq!(from_a.keys[0].key, "user:00000");
    assert!(
        store
            .kv_keys("p", "user:", Some("zz"), 10)
            .unwrap()
            .keys
            .is_empty()
    );
    let everything = store.kv_keys("p", "", None, 10_000).unwrap();
    assert_eq!(everything.keys.len(), 1_205);
    assert_eq!(everything.keys[0].key, "a");

    let before = store.kv_usage("p").unwrap();
    let cleared = store.kv_clear("p", "user:").unwrap();
    assert_eq!(cleared.keys, 1_200);
    assert_eq!(cleared.bytes, 1_200 * (10 + 4));
    assert_eq!(store.kv_usage("p").unwrap(), before - cleared.bytes);
    let left: Vec<_> = store
        .kv_keys("p", "", None, 100)
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(left, ["a", "user", "user;", "users:1", "zz"]);
    assert_eq!(store.kv_clear("p", "user:").unwrap(), KvCleared::default());

    let rest = store.kv_clear("p", "").unwrap();
    assert_eq!(rest.keys, 5);
    assert_eq!(store.kv_usage("p").unwrap(), 0);
    assert_eq!(store.kv_get("pp", "user:00001").unwrap().unwrap(), b"other");
    assert_eq!(
        store.kv_get("p-2", "user:00001").unwrap().unwrap(),
        b"other"
    );
    // The quota counts from zero again, and an emptied name is no longer listed.
    assert_eq!(store.kv_names().unwrap(), ["p-2", "pp"]);
    store.kv_set("p", "k", b"12345", 6).unwrap();

    // A copy replaces what its target held, and counts its usage.
    store.kv_set("p@copy", "stale", b"old", quota).unwrap();
    for i in 0..600u32 {
        store.kv_set("p", &format!("n{i:04}"), b"v", quota).unwrap();
    }
    let copied = store.kv_copy("p", "p@copy").unwrap();
    assert_eq!(copied.keys, 601);
    assert_eq!(
        store.kv_snapshot("p@copy").unwrap(),
        store.kv_snapshot("p").unwrap()
    );
    assert_eq!(
        store.kv_usage("p@copy").unwrap(),
        store.kv_usage("p").unwrap()
    );
    // Writes to the copy leave the original alone.
    store.kv_set("p@copy", "k", b"changed", quota).unwrap();
    assert_eq!(store.kv_get("p", "k").unwrap().unwrap(), b"12345");
    assert_eq!(store.kv_names().unwrap(), ["p", "p-2", "p@copy", "pp"]);
    assert!(matches!(
        store.kv_keys("a\0b", "", None, 1),
        Err(StoreError::InvalidName { .. })
    ));
}

#[test]
fn meta_trees_get_set_remove_and_scan() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store.meta_set("plugins", "scorer/a", b"1").unwrap();
    store.meta_set("plugins", "scorer/b", b"2").unwrap();
    store.meta_set("plugins", "router/a", b"3").unwrap();
    store.meta_set("prompts", "scorer/x", b"4").unwrap();
    assert_eq!(
        store.meta_get("plugins", "scorer/b").unwrap().unwrap(),
        b"2"
    );
    let scorers = store.meta_scan_prefix("plugins", "scorer/").unwrap();
    assert_eq!(
        scorers,
        vec![
            ("scorer/a".to_string(), b"1".to_vec()),
            ("scorer/b".to_string(), b"2".to_vec())
        ]
    );
    assert!(store.meta_remove("plugins", "scorer/a").unwrap());
    assert!(!store.meta_remove("plugins", "scorer/a").unwrap());
    assert_eq!(store.meta_scan_prefix("plugins", "").unwrap().len(), 2);
    assert!(store.meta_get("", "k").is_err());
}

#[test]
fn last_handle_dropped_inside_a_reply_does_not_hang() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let (tx, rx) = mpsc::channel();
    let held = store.clone();
    store.append_with(vec![event("x", 1)], move |r, _| {
        tx.send(r.map(|v| v.len())).unwrap();
        drop(held);
    });
    drop(store);
    assert_eq!(rx.recv().unwrap().unwrap(), 1);
}

#[test]
fn an_outcome_prepared_before_its_event_was_erased_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store
        .append(vec![event("e1", 1_000), event("e2", 1_001)])
        .unwrap();
    let label = outcome(Route::Label(target("q", 50)));
    // The pipeline checked that e1 exists and encoded its outcome; then e1 was erased.
    let prepared = store.prepare_outcome("e1", &label).unwrap();
    let erased = store.erase(vec!["e1".into()], "ops").unwrap();
    assert!(erased[0].erased);
    assert_eq!(store.unprocessed(), 1);
    let (tx, rx) = mpsc::channel();
    store.send(
        committer::Request::Complete {
            items: vec![prepared],
            durable: true,
            reply: Box::new(move |r| tx.send(r).unwrap()),
        },
        true,
    );
    assert_eq!(rx.recv().unwrap().unwrap(), vec![Completion::Erased]);
    assert_eq!(store.get("e1").unwrap(), None, "no outcome brought it back");
    assert!(
        store.queue_items("q", 10).unwrap().is_empty(),
        "and no queue item"
    );
    assert!(matches!(
        store.complete("e1", &label),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.pending().unwrap(), ["e2"]);
    assert_eq!(
        (store.count(), store.processed(), store.unprocessed()),
        (1, 0, 1)
    );
    // Outcomes prepared when nothing was erased meanwhile are written as ever.
    assert!(matches!(
        store.complete("e2", &label).unwrap(),
        Completion::Completed {
            queue_item: Some(_)
        }
    ));
    assert_eq!(
        (store.count(), store.processed(), store.unprocessed()),
        (1, 1, 0)
    );
}

#[test]
fn erase_matching_takes_a_users_events_or_those_before_a_time() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let mut events: Vec<Event> = (0..600)
            .map(|i| event(&format!("e{i}"), 1_000 + i))
            .collect();
        for e in events.iter_mut().skip(1).step_by(3) {
            e.user_id = Some("u2".into());
        }
        store.append(events).unwrap();
        for i in (0..600).step_by(2) {
            store
                .complete(&format!("e{i}"), &outcome(Route::Accept))
                .unwrap();
        }
        let mut chunks = Vec::new();
        let by_user = EventFilter {
            user_id: Some("u2".into()),
            ..EventFilter::default()
        };
        let total = store
            .erase_matching(&by_user, "ops", |c| chunks.push(c.events))
            .unwrap();
        assert_eq!(total.events, 200);
        assert_eq!(chunks, [200], "one chunk of 256 at most");
        assert!(store.list(&by_user, None, 10).unwrap().events.is_empty());
        assert_eq!(store.count(), 400);
        // 100 of u2's 200 had outcomes (e1, e4, e7, ...: every other one is even).
        assert_eq!(store.processed(), 200);

        let old = EventFilter {
            to_ms: Some(1_300),
            ..EventFilter::default()
        };
        assert!(old.only_time() && !old.is_empty() && !by_user.only_time());
        let total = store.erase_matching(&old, "retention", |_| {}).unwrap();
        assert_eq!(total.events, 200, "u1's 200 of the first 300");
        assert_eq!(store.count(), 200);
        let first = store.scan(&EventFilter::default()).next().unwrap().unwrap();
        assert_eq!(first.event.id, "e300");
        assert_eq!(store.unprocessed(), store.pending().unwrap().len() as u64);
    }
    let store = open(&dir);
    assert_eq!(store.count(), 200);
    assert_eq!(store.unprocessed(), store.pending().unwrap().len() as u64);
}

#[test]
fn erasing_while_events_arrive_and_complete_keeps_every_tree_and_count_consistent() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let n = 1_500usize;
    // How many events the appender has stored so far (ids e0 .. e{stored}).
    let stored = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
                let events = chunk
                    .iter()
                    .map(|i| event(&format!("e{i}"), 1_000 + *i as u64))
                    .collect();
                store.append(events).unwrap();
                stored.fetch_add(chunk.len(), SeqCst);
                std::thread::yield_now();
                let ids: Vec<String> = chunk.iter().map(|i| format!("e{i}")).collect();
                let label = outcome(Route::Label(target("q", 50)));
                let items: Vec<(&str, &Outcome)> =
                    ids.iter().map(|id| (id.as_str(), &label)).collect();
                // Some were erased in between: those are refused, the rest recorded.
                let (tx, rx) = mpsc::channel();
                store.complete_with(&items, move |r| tx.send(r).unwrap());
                for r in rx.recv().unwrap() {
                    match r {
                        Ok(_) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        s.spawn(|| {
            // Readers never see an event half erased, nor take an erased one for damage.
            while stored.load(SeqCst) < n {
                let all = EventFilter::default();
                store.list(&all, None, 500).unwrap();
                for record in store.scan(&all) {
                    record.unwrap();
                }
            }
        });
        s.spawn(|| {
            // Every third event, as soon as it is stored.
            let mut next = 0;
            while next < n {
                let upto = stored.load(SeqCst);
                let ids: Vec<String> = (next..upto)
                    .filter(|i| i % 3 == 0)
                    .map(|i| format!("e{i}"))
                    .collect();
                next = upto;
                if ids.is_empty() {
                    std::thread::yield_now();
                } else {
                    assert!(store.erase(ids, "ops").unwrap().iter().all(|e| e.erased));
                }
            }
        });
    });
    assert_eq!(store.count(), n - n.div_ceil(3));
    let t = store.trees();
    let events = t.events.len() as u64;
    assert_eq!(t.log.len() as u64, events);
    assert_eq!(store.count() as u64, events);
    assert_eq!(store.processed(), t.outcomes.len() as u64);
    for entry in t.outcomes.iter() {
        let (id, _) = entry.unwrap();
        assert!(
            t.events.contains_key(&id).unwrap(),
            "an outcome outlived its event"
        );
    }
    let items = store.queue_items("q", usize::MAX).unwrap();
    for item in &items {
        assert!(t.events.contains_key(&item.event_id).unwrap(), "{item:?}");
    }
    assert_eq!(
        items.len() as u64,
        store.processed(),
        "one item per outcome"
    );
    assert_eq!(store.queue_depths().unwrap()["q"], items.len() as u64);
    assert_eq!(store.unprocessed(), store.pending().unwrap().len() as u64);
}

#[test]
fn history_lists_the_times_that_lost_something_since_a_version() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    assert_eq!(store.history_since(0), (0, HistoryChanges::Spans(vec![])));
    store
        .append(vec![
            event("a", 1_000),
            event("b", 2_000),
            event("c", 3_000),
        ])
        .unwrap();
    assert_eq!(
        store.history_since(0).0,
        0,
        "appends add to the past's recent end only"
    );
    store.erase(vec!["a".into(), "c".into()], "test").unwrap();
    store.erase(vec!["nobody".into()], "test").unwrap();
    assert_eq!(
        store.history_since(0),
        (1, HistoryChanges::Spans(vec![(1_000, 3_000)])),
        "one erasure, over the times of what it took; none for an unknown id"
    );
    assert_eq!(store.history_since(1), (1, HistoryChanges::Spans(vec![])));
    // Past what is kept one by one, the oldest changes merge: a caller far behind
    // hears of a span covering them all, never less.
    for _ in 0..History::KEPT {
        store.record_history(5, 6).unwrap();
    }
    let (now, HistoryChanges::Spans(spans)) = store.history_since(0) else {
        panic!("spans");
    };
    assert_eq!(now, 1 + History::KEPT as u64);
    assert_eq!(spans.len(), History::KEPT);
    assert_eq!(spans[0], (5, 3_000), "the first two, merged");
    assert_eq!(store.history_since(1).1, store.history_since(0).1);
    assert_eq!(
        store.history_since(now - 2).1,
        HistoryChanges::Spans(vec![(5, 6), (5, 6)])
    );
    assert_eq!(store.history_since(now + 1).1, HistoryChanges::Everything);
}

#[test]
fn rollups_come_back_until_a_change_touches_their_span_even_across_restarts() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    store
        .append(vec![
            event("a", 1_500),
            event("b", 2_500),
            event("c", 3_500),
        ])
        .unwrap();
    let v = store.history_since(0).0;
    for start in [1_000, 2_000, 3_000] {
        assert!(
            store
                .put_rollup("k", start, start + 1_000, v, b"x")
                .unwrap()
        );
    }
    assert!(store.put_rollup("other", 1_000, 2_000, v, b"y").unwrap());
    let starts = |store: &Store, kind: &str| -> Vec<u64> {
        let kept = store.rollups(kind, 0, 10_000).unwrap();
        kept.iter().map(|r| r.start).collect()
    };
    assert_eq!(starts(&store, "k"), [1_000, 2_000, 3_000]);
    assert_eq!(
        store.rollups("k", 2_000, 3_000).unwrap(),
        [Rollup {
            start: 2_000,
            end: 3_000,
            bytes: b"x".to_vec()
        }]
    );

    // Erasing `b` touches 2,000..3,000 only, in every kind.
    store.erase(vec!["b".into()], "test").unwrap();
    assert_eq!(starts(&store, "k"), [1_000, 3_000]);
    assert_eq!(starts(&store, "other"), [1_000]);
    // Figures computed before the erasure are refused; after it, kept.
    assert!(!store.put_rollup("k", 2_000, 3_000, v, b"stale").unwrap());
    assert!(
        store.put_rollup("k", 1_000, 2_000, v, b"x").unwrap(),
        "untouched"
    );
    let v2 = store.history_since(0).0;
    assert!(store.put_rollup("k", 2_000, 3_000, v2, b"z").unwrap());
    assert_eq!(starts(&store, "k"), [1_000, 2_000, 3_000]);

    // The history, and so the rollups' versions, survive a restart.
    drop(store);
    let store = open(&dir);
    assert_eq!(store.history_since(v).0, v2);
    assert_eq!(starts(&store, "k"), [1_000, 2_000, 3_000]);
    assert_eq!(store.rollups("k", 2_000, 2_001).unwrap()[0].bytes, b"z");
    // An erasure with the server stopped (`flywheel erase`) goes through the same path.
    store.erase(vec!["c".into()], "test").unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(starts(&store, "k"), [1_000, 2_000]);

    // Pruning the audit trail touches everything before its cutoff, once there is
    // something to prune; a prune with nothing to take records nothing.
    let version = store.history_since(0).0;
    assert_eq!(store.prune_audit(5_000).unwrap(), 0);
    assert_eq!(store.history_since(0).0, version);

    assert_eq!(
        store.prune_rollups(2_000).unwrap(),
        2,
        "k and other at 1,000"
    );
    assert_eq!(starts(&store, "k"), [2_000]);
    assert!(store.put_rollup("", 0, 1, 0, b"").is_err(), "no kind");
}
