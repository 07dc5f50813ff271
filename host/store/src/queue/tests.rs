#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flywheel_model::{CorrectionSource, Event, Feedback, Outcome, Review, Thumb, Verdict, now_ms};
use serde_json::json;
use tempfile::TempDir;

use crate::{AuditAction, Completion, ItemStatus, Store, StoreError, StoreOptions};

const MINUTE: u64 = 60_000;

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path(), StoreOptions::default()).unwrap()
}

/// Stores an event and routes it to `queue` with `priority`; returns the item id.
fn queued(store: &Store, id: &str, queue: &str, priority: u8) -> String {
    let event = Event {
        id: id.into(),
        received_at: now_ms(),
        trace_id: None,
        session_id: None,
        user_id: None,
        model: None,
        prompt: None,
        input: "q".into(),
        output: "a".into(),
        context: vec![],
        feedback: Feedback::Thumbs { value: Thumb::Down },
        metadata: BTreeMap::new(),
    };
    store.append(vec![event]).unwrap();
    // Built from JSON so that fields with defaults stay defaulted.
    let outcome: Outcome = serde_json::from_value(json!({
        "scores": [], "votes": [], "calls": [], "plugins": [], "processed_at": now_ms(),
        "route": {"action": "label", "queue": queue, "priority": priority, "reason": "unsure"},
    }))
    .unwrap();
    match store.complete(id, &outcome).unwrap() {
        Completion::Completed {
            queue_item: Some(item),
        } => item.id,
        other => panic!("expected a queue item, got {other:?}"),
    }
}

/// A queue's whole audit trail (of one item, if given), oldest first.
fn trail(store: &Store, queue: &str, item: Option<&str>) -> Vec<crate::AuditEntry> {
    let filter = crate::AuditFilter {
        item_id: item.map(str::to_owned),
        ..Default::default()
    };
    let page = store.audit_page(queue, &filter, None, 1_000).unwrap();
    assert_eq!(page.next_cursor, None);
    page.entries
}

fn review(queue: &str, item: &str, reviewer: &str, verdict: Verdict, at: u64) -> Review {
    Review {
        queue: queue.into(),
        item_id: item.into(),
        reviewer: reviewer.into(),
        verdict,
        rating: Some(4),
        tags: vec!["tone".into()],
        corrected_output: Some(format!("fixed by {reviewer}")),
        note: None,
        reviewed_at: at,
    }
}

#[test]
fn claims_go_by_priority_then_age_and_skip_what_is_held() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let low = queued(&store, "low", "q", 10);
    let high_old = queued(&store, "high-old", "q", 90);
    let high_new = queued(&store, "high-new", "q", 90);
    let now = now_ms();
    let order: Vec<String> = (0..3)
        .map(|_| {
            store
                .claim("q", "alice", MINUTE, &[], now)
                .unwrap()
                .unwrap()
                .item
                .id
        })
        .collect();
    assert_eq!(order, [high_old, high_new, low]);
    assert_eq!(store.claim("q", "bob", MINUTE, &[], now).unwrap(), None);
    assert_eq!(store.queue_depths().unwrap()["q"], 0);
    let s = &store.queue_summaries(now).unwrap()[0];
    assert_eq!((s.pending, s.in_review, s.done), (0, 3, 0));
}

#[test]
fn skip_passes_over_items() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let first = queued(&store, "e1", "q", 50);
    let second = queued(&store, "e2", "q", 50);
    let got = store
        .claim("q", "alice", MINUTE, &[first], now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(got.item.id, second);
}

#[test]
fn concurrent_claims_never_share_an_item() {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(open(&dir));
    for i in 0..40 {
        queued(&store, &format!("e{i}"), "q", (i % 3) as u8);
    }
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(e) = store
                    .claim("q", &format!("r{t}"), MINUTE, &[], now_ms())
                    .unwrap()
                {
                    got.push(e.item.id);
                }
                got
            })
        })
        .collect();
    let all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 40, "every item handed out once");
    assert_eq!(unique.len(), 40, "no item handed out twice");
    assert_eq!(store.queue_depths().unwrap()["q"], 0);
}

#[test]
fn an_expired_lease_puts_the_item_back() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let item = queued(&store, "e1", "q", 50);
    let t0 = now_ms() - 10_000;
    store.claim("q", "alice", 1_000, &[], t0).unwrap().unwrap();
    // Passed, but not yet taken over: alice cannot review, the item counts as pending.
    let late = review("q", &item, "alice", Verdict::Approve, t0 + 2_000);
    assert!(matches!(
        store.review(late, 1),
        Err(StoreError::LeaseExpired { .. })
    ));
    assert_eq!(store.queue_depths().unwrap()["q"], 1);
    let seen = store.queue_entry("q", &item, t0 + 2_000).unwrap().unwrap();
    assert_eq!((seen.status, seen.lease), (ItemStatus::Pending, None));

    let taken = store
        .claim("q", "bob", MINUTE, &[], t0 + 2_000)
        .unwrap()
        .unwrap();
    assert_eq!(taken.item.id, item);
    assert_eq!(taken.lease.unwrap().reviewer, "bob");
    assert_eq!(store.queue_depths().unwrap()["q"], 0);
    let late = review("q", &item, "alice", Verdict::Approve, t0 + 3_000);
    assert!(matches!(
        store.review(late, 1),
        Err(StoreError::NotClaimed { .. })
    ));
    let actions: Vec<(AuditAction, String)> = trail(&store, "q", Some(&item))
        .into_iter()
        .map(|a| (a.action, a.actor))
        .collect();
    assert_eq!(
        actions,
        [
            (AuditAction::Claimed, "alice".into()),
            (AuditAction::LeaseExpired, "alice".into()),
            (AuditAction::Claimed, "bob".into()),
        ]
    );
}

#[test]
fn release_gives_the_item_back_to_anyone() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let item = queued(&store, "e1", "q", 50);
    let now = now_ms();
    store
        .claim("q", "alice", MINUTE, &[], now)
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.release("q", &item, "bob", now),
        Err(StoreError::NotClaimed { .. })
    ));
    let back = store.release("q", &item, "alice", now).unwrap();
    assert_eq!(back.status, ItemStatus::Pending);
    assert_eq!(store.queue_depths().unwrap()["q"], 1);
    assert_eq!(
        store
            .claim("q", "alice", MINUTE, &[], now)
            .unwrap()
            .unwrap()
            .item
            .id,
        item
    );
    assert!(matches!(
        store.release("q", "nope", "alice", now),
        Err(StoreError::NoSuchItem { .. })
    ));
}

#[test]
fn two_reviewers_complete_an_item_and_their_disagreement_shows() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let item = queued(&store, "e1", "q", 50);
    let now = now_ms();
    store
        .claim("q", "alice", MINUTE, &[], now)
        .unwrap()
        .unwrap();
    let first = store
        .review(review("q", &item, "alice", Verdict::Approve, now), 2)
        .unwrap();
    assert_eq!(first.status, ItemStatus::Pending);
    assert!(!first.disagreement());
    assert_eq!(
        store.claim("q", "alice", MINUTE, &[], now).unwrap(),
        None,
        "alice has reviewed it"
    );

    store.claim("q", "bob", MINUTE, &[], now).unwrap().unwrap();
    let done = store
        .review(review("q", &item, "bob", Verdict::Reject, now + 1), 2)
        .unwrap();
    assert_eq!(done.status, ItemStatus::Done);
    assert_eq!(done.done_at, Some(now + 1));
    assert!(done.disagreement());
    assert_eq!(store.claim("q", "carol", MINUTE, &[], now).unwrap(), None);
    assert!(
        store.queue_items("q", 10).unwrap().is_empty(),
        "done items leave the open index"
    );
    let listed = store
        .queue_entries("q", Some(ItemStatus::Done), None, 10, now)
        .unwrap();
    assert_eq!(listed.entries, std::slice::from_ref(&done));
    let s = &store.queue_summaries(now).unwrap()[0];
    assert_eq!((s.pending, s.in_review, s.done), (0, 0, 1));
    assert!(matches!(
        store.review(review("q", &item, "bob", Verdict::Reject, now), 2),
        Err(StoreError::ItemDone { .. })
    ));

    // The event carries both reviews; the latest correction is the event's correction.
    let event = store.get("e1").unwrap().unwrap();
    assert_eq!(event.reviews.len(), 2);
    let correction = event.correction.unwrap();
    assert_eq!(correction.text, "fixed by bob");
    assert_eq!(correction.source, CorrectionSource::Review);
    assert_eq!(
        event.event.feedback,
        Feedback::Thumbs { value: Thumb::Down },
        "original feedback kept"
    );

    let audit: Vec<AuditAction> = trail(&store, "q", None)
        .into_iter()
        .map(|a| a.action)
        .collect();
    use AuditAction::*;
    assert_eq!(audit, [Claimed, Reviewed, Claimed, Reviewed, Completed]);
    let late: Vec<AuditAction> = store
        .queue_audit_between(now + 1, now + 2)
        .unwrap()
        .map(|a| a.unwrap().action)
        .collect();
    assert_eq!(late, [Reviewed, Completed], "a time range of the trail");
}

#[test]
fn queue_state_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let item;
    {
        let store = open(&dir);
        queued(&store, "e1", "q", 50);
        item = queued(&store, "e2", "q", 60);
        store
            .claim("q", "alice", MINUTE, &[], now_ms())
            .unwrap()
            .unwrap();
    }
    let store = open(&dir);
    let entry = store.queue_entry("q", &item, now_ms()).unwrap().unwrap();
    assert_eq!(entry.status, ItemStatus::InReview);
    assert_eq!(store.queue_depths().unwrap()["q"], 1);
}

#[test]
fn erasing_events_takes_their_items_in_every_state_and_keeps_the_counts() {
    let dir = TempDir::new().unwrap();
    {
        let store = open(&dir);
        let now = now_ms();
        let leased = queued(&store, "leased", "q", 90);
        let released = queued(&store, "released", "q", 80);
        let done = queued(&store, "done", "q", 70);
        let partial = queued(&store, "partial", "q", 60);
        queued(&store, "open", "q", 20);
        let keep = queued(&store, "keep", "q", 10);
        let claim = |who: &str, skip: &[String]| {
            store
                .claim("q", who, MINUTE, skip, now)
                .unwrap()
                .unwrap()
                .item
                .id
        };
        assert_eq!(claim("alice", &[]), leased);
        assert_eq!(claim("bob", &[]), released);
        store.release("q", &released, "bob", now).unwrap();
        let skip = [released.clone()];
        assert_eq!(claim("carol", &skip), done);
        store
            .review(review("q", &done, "carol", Verdict::Approve, now), 1)
            .unwrap();
        assert_eq!(claim("dave", &skip), partial);
        store
            .review(review("q", &partial, "dave", Verdict::Approve, now), 2)
            .unwrap();
        // Two outcomes as stored before outcomes named their queue item: found by a scan.
        for id in ["leased", "done"] {
            let t = store.trees();
            let v = t.outcomes.get(id).unwrap().unwrap();
            assert_eq!(v[0], 2);
            let len = u32::from_be_bytes(v[1..5].try_into().unwrap()) as usize;
            assert!(len > 0);
            let mut v1 = vec![1u8];
            v1.extend_from_slice(&v[5 + len..]);
            t.outcomes.insert(id, v1).unwrap();
        }
        // Pending: released, partial, open, keep; leased is held; done is done.
        assert_eq!(store.queue_depths().unwrap()["q"], 4);

        let ids = [
            "leased", "released", "done", "partial", "open", "nope", "open",
        ];
        let erased = store
            .erase(ids.iter().map(|s| s.to_string()).collect(), "ops")
            .unwrap();
        let got: Vec<(&str, bool, u64)> = erased
            .iter()
            .map(|e| (e.id.as_str(), e.erased, e.queue_items))
            .collect();
        assert_eq!(
            got,
            [
                ("leased", true, 1),
                ("released", true, 1),
                ("done", true, 1),
                ("partial", true, 1),
                ("open", true, 1),
                ("nope", false, 0),
                ("open", false, 0),
            ]
        );
        for id in &ids[..5] {
            assert_eq!(store.get(id).unwrap(), None, "{id}");
        }
        assert!(matches!(
            store.review(review("q", &leased, "alice", Verdict::Approve, now), 1),
            Err(StoreError::NoSuchItem { .. })
        ));
        // The trail says who took each item away.
        for item in [&leased, &released, &done, &partial] {
            let entries = trail(&store, "q", Some(item));
            let last = entries.last().unwrap();
            assert_eq!(
                (last.action, last.actor.as_str()),
                (AuditAction::Erased, "ops")
            );
        }
        let erased = trail(&store, "q", None)
            .into_iter()
            .filter(|a| a.action == AuditAction::Erased)
            .count();
        assert_eq!(erased, 5, "one per item, none for the unknown id");
        let left: Vec<String> = store
            .queue_entries("q", None, None, 100, now)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.item.id)
            .collect();
        assert_eq!(left, std::slice::from_ref(&keep));
        let s = &store.queue_summaries(now).unwrap()[0];
        assert_eq!((s.pending, s.in_review, s.done), (1, 0, 0));
        assert_eq!(store.queue_depths().unwrap()["q"], 1);
        assert_eq!(
            (store.count(), store.processed(), store.unprocessed()),
            (1, 1, 0)
        );
        assert_eq!(
            claim("erin", &[]),
            keep,
            "no lease of an erased item is left"
        );
    }
    let store = open(&dir);
    assert_eq!((store.count(), store.processed()), (1, 1));
    assert_eq!(
        store.queue_depths().unwrap()["q"],
        0,
        "keep is held by erin"
    );
    let s = &store.queue_summaries(now_ms()).unwrap()[0];
    assert_eq!((s.pending, s.in_review, s.done), (0, 1, 0));
}

#[test]
fn items_page_through_open_then_done_within_the_scan_budget() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let now = now_ms();
    // Five done items (claimed and reviewed, one reviewer each), then four open ones in
    // claim order: priority 90 before 10, oldest first among equals, one of them held.
    let mut done = Vec::new();
    for i in 0..5 {
        let item = queued(&store, &format!("done-{i}"), "q", 50);
        store
            .claim("q", "alice", MINUTE, &[], now)
            .unwrap()
            .unwrap();
        store
            .review(review("q", &item, "alice", Verdict::Approve, now), 1)
            .unwrap();
        done.push(item);
    }
    let low = queued(&store, "low", "q", 10);
    let high = [
        queued(&store, "high-0", "q", 90),
        queued(&store, "high-1", "q", 90),
    ];
    let held = queued(&store, "held", "q", 10);
    let skip = [high[0].clone(), high[1].clone(), low.clone()];
    let claimed = store
        .claim("q", "bob", MINUTE, &skip, now)
        .unwrap()
        .unwrap();
    assert_eq!(claimed.item.id, held);
    let mut expected = vec![high[0].clone(), high[1].clone(), low.clone(), held.clone()];
    expected.extend(done.iter().cloned());
    // Another queue whose name extends this one's: never listed here.
    queued(&store, "other", "q2", 50);

    let ids = |page: &crate::ItemsPage| -> Vec<String> {
        page.entries.iter().map(|e| e.item.id.clone()).collect()
    };
    let walk = |status: Option<ItemStatus>, limit: usize, budget: usize| {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page = store
                .queue_entries_within("q", status, cursor.as_deref(), limit, now, budget)
                .unwrap();
            assert!(page.entries.len() <= limit);
            all.extend(ids(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return all,
            }
        }
        panic!("the pages never end");
    };
    for (limit, budget) in [(100, 100), (3, 100), (1, 100), (100, 2), (2, 3)] {
        assert_eq!(walk(None, limit, budget), expected, "{limit}, {budget}");
        assert_eq!(walk(Some(ItemStatus::Done), limit, budget), done);
        assert_eq!(
            walk(Some(ItemStatus::InReview), limit, budget),
            std::slice::from_ref(&held)
        );
        assert_eq!(
            walk(Some(ItemStatus::Pending), limit, budget),
            [high[0].clone(), high[1].clone(), low.clone()]
        );
    }
    for bad in ["zz", "", "02", "ff00"] {
        let e = store
            .queue_entries("q", None, Some(bad), 10, now)
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidCursor), "{bad:?}: {e}");
    }
}

/// The summary the slow way: every item read, as `queue_summaries` once did.
fn walked_summary(store: &Store, queue: &str, now: u64) -> crate::QueueSummary {
    let page = store
        .queue_entries(queue, None, None, usize::MAX, now)
        .unwrap();
    assert_eq!(page.next_cursor, None);
    let mut s = crate::QueueSummary {
        queue: queue.into(),
        ..Default::default()
    };
    for e in page.entries {
        match e.status {
            ItemStatus::Pending => {
                s.pending += 1;
                let at = e.item.created_at;
                s.oldest_pending_at = Some(s.oldest_pending_at.map_or(at, |o: u64| o.min(at)));
            }
            ItemStatus::InReview => s.in_review += 1,
            ItemStatus::Done => s.done += 1,
        }
    }
    s
}

#[test]
fn summaries_from_counters_match_reading_every_item() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut items = Vec::new();
    for i in 0..12u8 {
        // Priorities 90, 50, 10 in turn: the oldest pending item is not the first in
        // claim order.
        items.push(queued(
            &store,
            &format!("e{i}"),
            "q",
            [90, 50, 10][usize::from(i % 3)],
        ));
    }
    queued(&store, "elsewhere", "q2", 50);
    let now = now_ms();
    let check = |at: u64, why: &str| {
        let summaries = store.queue_summaries(at).unwrap();
        let q = summaries.iter().find(|s| s.queue == "q").unwrap();
        assert_eq!(*q, walked_summary(&store, "q", at), "{why}");
        let q2 = summaries.iter().find(|s| s.queue == "q2").unwrap();
        assert_eq!(*q2, walked_summary(&store, "q2", at), "{why}");
    };
    check(now, "all pending");
    // alice holds the three 90s (one with a short lease), bob a 50.
    let short = store.claim("q", "alice", 10, &[], now).unwrap().unwrap();
    store
        .claim("q", "alice", MINUTE, &[], now)
        .unwrap()
        .unwrap();
    store
        .claim("q", "alice", MINUTE, &[], now)
        .unwrap()
        .unwrap();
    let held = store.claim("q", "bob", MINUTE, &[], now).unwrap().unwrap();
    check(now, "four held");
    check(now + 10, "one lease just passed");
    check(now + MINUTE + 1, "every lease passed");
    // Reviews: one item done (one reviewer needed), one half done (two needed).
    store
        .review(
            review("q", &held.item.id, "bob", Verdict::Approve, now + 1),
            1,
        )
        .unwrap();
    let again = store
        .claim("q", "carol", MINUTE, &[], now + 20)
        .unwrap()
        .unwrap();
    assert_eq!(
        again.item.id, short.item.id,
        "the passed lease is claimed again"
    );
    store
        .review(
            review("q", &again.item.id, "carol", Verdict::Reject, now + 21),
            2,
        )
        .unwrap();
    check(now + 30, "one done, one waiting for a second reviewer");
    // A release and an erasure.
    let released = store
        .claim("q", "dan", MINUTE, &[], now + 40)
        .unwrap()
        .unwrap();
    store
        .release("q", &released.item.id, "dan", now + 41)
        .unwrap();
    store.erase(vec!["e5".into(), "e7".into()], "test").unwrap();
    check(now + 50, "after a release and an erasure");
    check(now + 2 * MINUTE, "later still");
    assert_eq!(items.len(), 12);
}

#[test]
fn an_item_never_claimed_is_found_by_id_at_any_priority() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let items: Vec<(String, u8)> = [0u8, 37, 100, 50, 37]
        .iter()
        .enumerate()
        .map(|(i, &p)| (queued(&store, &format!("e{i}"), "q", p), p))
        .collect();
    for (id, priority) in &items {
        let entry = store.queue_entry("q", id, now_ms()).unwrap().unwrap();
        assert_eq!(
            (&entry.item.id, entry.item.priority, entry.status),
            (id, *priority, ItemStatus::Pending)
        );
    }
    // Unknown: a ULID that names no item, one from another queue, not a ULID at all.
    let nobody = ulid::Ulid::new().to_string();
    let elsewhere = queued(&store, "x", "other", 50);
    for id in [nobody.as_str(), elsewhere.as_str(), "not-an-item", ""] {
        assert!(
            store.queue_entry("q", id, now_ms()).unwrap().is_none(),
            "{id}"
        );
    }
    // Claimed, reviewed once of two, then done: found through its state.
    let (first, _) = &items[2];
    let claimed = store
        .claim("q", "ana", MINUTE, &[], now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(&claimed.item.id, first, "priority 100 goes first");
    store
        .review(review("q", first, "ana", Verdict::Approve, now_ms()), 2)
        .unwrap();
    let entry = store.queue_entry("q", first, now_ms()).unwrap().unwrap();
    assert_eq!(
        (entry.status, entry.reviews.len()),
        (ItemStatus::Pending, 1)
    );
    // ana may not take it again; ben may.
    let next = store
        .claim("q", "ana", MINUTE, &[], now_ms())
        .unwrap()
        .unwrap();
    assert_ne!(&next.item.id, first);
    let ben = store
        .claim("q", "ben", MINUTE, &[], now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(&ben.item.id, first);
    store
        .review(review("q", first, "ben", Verdict::Approve, now_ms()), 2)
        .unwrap();
    let entry = store.queue_entry("q", first, now_ms()).unwrap().unwrap();
    assert_eq!(entry.status, ItemStatus::Done);
}
