#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use flywheel_model::{Event, Feedback, Outcome, Review, Thumb, Verdict, now_ms};
use serde_json::json;
use tempfile::TempDir;

use super::RESTORE_BATCH;
use crate::{BackupInfo, Completion, Store, StoreError, StoreOptions, read_backup, restore};

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        received_at: now_ms(),
        trace_id: None,
        session_id: None,
        user_id: Some("u1".into()),
        model: None,
        prompt: None,
        input: "how do I reset my password?".into(),
        output: "Click 'forgot password'.".into(),
        context: vec![],
        feedback: Feedback::Thumbs { value: Thumb::Down },
        metadata: BTreeMap::new(),
    }
}

fn label(queue: &str) -> Outcome {
    // Built from JSON so that fields with defaults stay defaulted.
    serde_json::from_value(json!({
        "scores": [], "votes": [], "calls": [], "plugins": [], "processed_at": now_ms(),
        "route": {"action": "label", "queue": queue, "priority": 50, "reason": "unsure"},
    }))
    .unwrap()
}

/// A tree's entries, in order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree of `store`, entry by entry.
fn contents(store: &Store) -> BTreeMap<Vec<u8>, Entries> {
    let db = store.db();
    db.tree_names()
        .into_iter()
        .map(|name| {
            let tree = db.open_tree(&name).unwrap();
            let entries = tree
                .iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (name.to_vec(), entries)
        })
        .collect()
}

/// A store with something in every tree: pending and processed events, open, claimed
/// and reviewed queue items, plugin kv data and a meta tree.
fn seeded(dir: &TempDir) -> Store {
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
    store
        .append((0..20).map(|i| event(&format!("e{i}"))).collect())
        .unwrap();
    let outcome = label("review");
    let done: Vec<(String, &Outcome)> = (0..15).map(|i| (format!("e{i}"), &outcome)).collect();
    let done: Vec<(&str, &Outcome)> = done.iter().map(|(id, o)| (id.as_str(), *o)).collect();
    let items: Vec<String> = store
        .complete_all(&done)
        .unwrap()
        .into_iter()
        .map(|c| match c {
            Completion::Completed {
                queue_item: Some(item),
            } => item.id,
            other => panic!("{other:?}"),
        })
        .collect();
    let now = now_ms();
    store
        .claim("review", "ana", 60_000, &[], now)
        .unwrap()
        .unwrap();
    let claimed = store
        .claim("review", "bo", 60_000, &[], now)
        .unwrap()
        .unwrap();
    store
        .review(
            Review {
                queue: "review".into(),
                item_id: claimed.item.id.clone(),
                reviewer: "bo".into(),
                verdict: Verdict::Reject,
                rating: Some(2),
                tags: vec![],
                corrected_output: Some("Use the reset link in Settings.".into()),
                note: None,
                reviewed_at: now,
            },
            1,
        )
        .unwrap();
    assert_eq!(items.len(), 15);
    store.kv_set("counter", "k", b"value", 1 << 20).unwrap();
    store.meta_set("plugins", "scorer", b"{\"v\":1}").unwrap();
    store
}

#[test]
fn a_restored_backup_holds_every_tree_exactly() {
    let dir = TempDir::new().unwrap();
    let store = seeded(&dir);
    // More entries in one tree than a restore applies in one batch.
    for i in 0..(RESTORE_BATCH + 10) {
        store
            .kv_set("bulk", &format!("k{i}"), b"v", u64::MAX)
            .unwrap();
    }
    let mut file = Vec::new();
    let info = store.backup(&mut file).unwrap();
    assert_eq!((info.events, info.processed), (20, 15));
    assert_eq!(info.bytes, file.len() as u64);
    assert!(info.paused_ms.is_some());
    assert!(info.trees >= 13, "{info:?}");

    let read = read_backup(file.as_slice()).unwrap();
    assert_eq!(
        read,
        BackupInfo {
            paused_ms: None,
            ..info.clone()
        }
    );

    let target = TempDir::new().unwrap();
    let restored_dir = target.path().join("store");
    let restored = restore(file.as_slice(), &restored_dir).unwrap();
    assert_eq!(restored, read);
    assert!(!target.path().join("store.restoring").exists());

    let before = contents(&store);
    let again = Store::open(&restored_dir, StoreOptions::default()).unwrap();
    assert_eq!(contents(&again), before);
    assert_eq!(again.count(), 20);
    assert_eq!(again.processed(), 15);
    assert_eq!(again.unprocessed(), 5);
    assert_eq!(again.queue_depths().unwrap()["review"], 13);
    assert_eq!(again.kv_get("counter", "k").unwrap().unwrap(), b"value");
    assert_eq!(
        again.meta_get("plugins", "scorer").unwrap().unwrap(),
        b"{\"v\":1}"
    );
    // The restored store is a store like any other: it takes new events.
    again.append(vec![event("new")]).unwrap();
    assert_eq!(again.count(), 21);
}

#[test]
fn a_damaged_or_truncated_backup_is_refused_and_leaves_nothing_behind() {
    let dir = TempDir::new().unwrap();
    let store = seeded(&dir);
    let mut file = Vec::new();
    store.backup(&mut file).unwrap();
    let target = TempDir::new().unwrap();
    let into = target.path().join("store");
    let refused = |bytes: &[u8], why: &str| {
        let err = restore(bytes, &into).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidBackup { reason } if reason.contains(why)),
            "{why}: {err}"
        );
        assert!(matches!(
            read_backup(bytes),
            Err(StoreError::InvalidBackup { .. })
        ));
        assert!(!into.exists(), "{why}: a store was left behind");
        assert!(!target.path().join("store.restoring").exists());
    };

    let mut damaged = file.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    // A flipped bit in a value is caught by the hash; one in a tag or length by framing.
    let err = restore(damaged.as_slice(), &into).unwrap_err();
    assert!(matches!(err, StoreError::InvalidBackup { .. }), "{err}");
    assert!(!into.exists());

    for cut in [10, 30, middle, file.len() - 33, file.len() - 1] {
        refused(&file[..cut], "truncated");
    }
    refused(b"not a backup at all, just text", "magic");
    let mut other = file.clone();
    other[16..20].copy_from_slice(&2u32.to_be_bytes());
    refused(&other, "format 2");
    let mut longer = file.clone();
    longer.push(0);
    refused(&longer, "trailing");

    // A directory that holds a store is never overwritten.
    restore(file.as_slice(), &into).unwrap();
    let err = restore(file.as_slice(), &into).unwrap_err();
    assert!(matches!(&err, StoreError::InvalidBackup { reason } if reason.contains("not empty")));
    assert_eq!(
        Store::open(&into, StoreOptions::default()).unwrap().count(),
        20
    );
}

#[test]
fn a_backup_taken_while_events_arrive_is_one_point_in_time() {
    let dir = TempDir::new().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let stop = AtomicBool::new(false);
    let backups = std::thread::scope(|s| {
        s.spawn(|| {
            let outcome = label("q");
            let mut n = 0;
            while !stop.load(SeqCst) {
                let ids: Vec<String> = (n..n + 20).map(|i| format!("e{i}")).collect();
                n += 20;
                store
                    .append(ids.iter().map(|id| event(id)).collect())
                    .unwrap();
                // Complete half of each chunk, so that some stay pending.
                let done: Vec<(&str, &Outcome)> =
                    ids[..10].iter().map(|id| (id.as_str(), &outcome)).collect();
                store.complete_all(&done).unwrap();
                store.kv_set("p", &format!("k{n}"), b"v", u64::MAX).unwrap();
                // And erase some, so that keys also go while the trees are copied.
                if n % 100 == 0 {
                    store.erase(vec![format!("e{}", n - 15)], "ops").unwrap();
                    store.kv_delete("p", &format!("k{}", n - 40)).unwrap();
                }
            }
        });
        // Six backups, and more until one has caught writes mid-copy (on a busy machine
        // the writer can be starved through a few copies); each is checked below.
        let mut backups = Vec::new();
        let mut caught = false;
        while backups.len() < 6 || (!caught && backups.len() < 200) {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let mut file = Vec::new();
            caught |= store.backup(&mut file).unwrap().rewritten > 0;
            backups.push(file);
        }
        stop.store(true, SeqCst);
        backups
    });
    let mut rewritten = 0;
    for (i, file) in backups.iter().enumerate() {
        let target = TempDir::new().unwrap();
        let info = restore(file.as_slice(), &target.path().join("store")).unwrap();
        rewritten += info.rewritten;
        let restored = Store::open(&target.path().join("store"), StoreOptions::default()).unwrap();
        let t = restored.trees();
        let events = t.events.len() as u64;
        assert!(events > 0, "backup {i} is empty");
        assert_eq!(info.events, events, "backup {i}");
        assert_eq!(t.log.len() as u64, events, "backup {i}");
        assert_eq!(restored.processed(), t.outcomes.len() as u64, "backup {i}");
        assert_eq!(info.processed, restored.processed(), "backup {i}");
        let items = restored.queue_items("q", usize::MAX).unwrap();
        assert_eq!(items.len() as u64, restored.processed(), "backup {i}");
        assert_eq!(
            restored
                .queue_depths()
                .unwrap()
                .get("q")
                .copied()
                .unwrap_or(0),
            items.len() as u64,
            "backup {i}"
        );
        // kv usage is the sum of key and value lengths (the stored key has `p\0` in front).
        let used: u64 =
            t.kv.iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.len() - 2 + v.len()) as u64
                })
                .sum();
        assert_eq!(restored.kv_usage("p").unwrap(), used, "backup {i}");
    }
    assert!(
        rewritten > 0,
        "no write ever landed during a copy: the test tests nothing"
    );
}

/// A destination that fails after `left` bytes, as a full disk does.
struct FullDisk {
    left: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("no space left on device"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_backup_that_cannot_write_fails_and_leaves_the_store_as_it_was() {
    let dir = TempDir::new().unwrap();
    let store = seeded(&dir);
    let err = store.backup(FullDisk { left: 1000 }).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { message, .. } if message.contains("no space")),
        "{err}"
    );
    // Writes go on, and the next backup has them.
    store.append(vec![event("after")]).unwrap();
    let mut file = Vec::new();
    assert_eq!(store.backup(&mut file).unwrap().events, 21);
}
