//! Backups of a live store, and restoring one into an empty directory.
//!
//! The store is one sled database, and copying its files while the server writes gives
//! a torn copy; sled has no snapshots either. [`Store::backup`] makes one point in time
//! out of two passes:
//!
//! 1. it watches every tree for changes (sled's `watch_prefix`, which sees every write,
//!    transactions included), then copies every tree while the server goes on writing:
//!    a *fuzzy* copy, where a key changed during the copy may hold any of its values;
//! 2. it writes again, after the copy, the current value (or the removal) of every key
//!    that changed during it; then of every key that changed during that round; and so
//!    on while the rounds shrink (at most [`MAX_ROUNDS`]);
//! 3. it pauses every write (the store's [`WriteGate`](crate::WriteGate)) and writes
//!    again the keys that changed during the last round, plus any tree created since
//!    the watch began.
//!
//! A restore applies the records in order, so each key ends with its value at the
//! pause: a key's last record was written after its last change. Counters, queue
//! depths and items agree in the copy as they do on disk. The pause lasts as long as
//! copying what changed during the last round (milliseconds at moderate load, see
//! BENCHMARKS), not as long as the copy; writes wait through it, none fails.
//!
//! # Format (version 1)
//! All integers are big-endian.
//!
//! ```text
//! "flywheel-backup\n"  u32 format
//! ( 'T' u32 len tree-name | 'K' u32 len key u32 len value | 'D' u32 len key )*
//! 'Z' u32 len summary JSON  [32] blake3 of every byte before it
//! ```
//!
//! `T` switches to a tree (a tree's name may come again, in the second pass), `K` sets a
//! key, `D` removes one. A restore checks the hash before it puts the restored store in
//! place, so a truncated or damaged file never becomes a store.

use std::collections::HashSet;
use std::future::Future;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::{EVENTS_COUNTER, PROCESSED_COUNTER, Store, StoreOptions, codec};

const MAGIC: &[u8; 16] = b"flywheel-backup\n";
const FORMAT: u32 = 1;
const TREE: u8 = b'T';
const ENTRY: u8 = b'K';
const REMOVAL: u8 = b'D';
const END: u8 = b'Z';
/// Rounds of copying changed keys again before the pause, at most: under a write load
/// the disk cannot keep up with, the rounds stop shrinking.
const MAX_ROUNDS: usize = 4;
/// Changed keys few enough to copy under the pause (a few milliseconds).
const SMALL_ROUND: usize = 2_000;
/// Entries per sled batch when restoring: big enough to amortise a batch, small enough
/// not to hold a large tree in memory.
const RESTORE_BATCH: usize = 4096;

/// What a backup holds: written at its end, and returned by [`Store::backup`],
/// [`read_backup`] and [`restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The file format's version.
    pub format: u32,
    /// The point in time the copy holds: when writes were paused (ms since the Unix
    /// epoch).
    pub created_at: u64,
    /// Events stored at that moment.
    pub events: u64,
    /// Of those, events with an outcome; the rest are processed when a server starts
    /// on the restored store.
    pub processed: u64,
    /// sled trees copied (events, queues, plugin blobs, prompts: everything).
    #[serde(default)]
    pub trees: u64,
    /// Key-value records in the file, over all trees and rounds.
    #[serde(default)]
    pub entries: u64,
    /// Of those, keys written again because they changed while the trees were copied
    /// (in rounds, the last one read under the pause).
    #[serde(default)]
    pub rewritten: u64,
    /// Size of the backup file.
    #[serde(default, skip_deserializing)]
    pub bytes: u64,
    /// How long writes were paused (only when taking a backup).
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub paused_ms: Option<u64>,
}

impl Store {
    /// Writes a consistent copy of the whole store to `out` while the store stays in
    /// use; writes pause only at the end, to read again what changed during the last
    /// round of copying (see the module notes).
    pub fn backup(&self, out: impl Write) -> Result<BackupInfo> {
        let db = self.db();
        let mut names = db.tree_names();
        names.sort();
        // Watch every tree before copying any: a write the copy misses is seen here.
        let watch = Watch::start(db, &names)?;
        let mut out = Writing::new(out);
        out.put(MAGIC)?;
        out.put(&FORMAT.to_be_bytes())?;
        let mut entries = 0_u64;
        for name in &names {
            entries += copy_tree(&mut out, &db.open_tree(name)?)?;
        }

        // Copy again what changed during the copy, and again what changed during that,
        // while the server works; each round is shorter, and the last, under the pause,
        // only has what changed during the one before it.
        let mut rewritten = 0_u64;
        for _ in 0..MAX_ROUNDS {
            let changed = watch.take();
            let n: usize = changed.iter().map(HashSet::len).sum();
            rewritten += write_changed(&mut out, read_changed(db, &names, changed)?)?;
            if n <= SMALL_ROUND {
                break;
            }
        }
        let asked = Instant::now();
        let paused = self.trees().gate.write();
        // Every write has finished and announced itself: collect them all, and read
        // their values (and any tree created since the watch began: new, so small) into
        // memory; they are written out once writes go on.
        let mut last = read_changed(db, &names, watch.finish()?)?;
        let created_at = flywheel_model::now_ms();
        let mut all = db.tree_names();
        all.sort();
        for name in all.iter().filter(|n| names.binary_search(n).is_err()) {
            let tree = db.open_tree(name)?;
            let entries = tree
                .iter()
                .map(|e| e.map(|(k, v)| (k, Some(v))))
                .collect::<Result<Vec<_>, _>>()?;
            last.push((name.clone(), entries));
        }
        let counter = |key: &[u8]| -> Result<u64> {
            match self.trees().counters.get(key)? {
                Some(v) => codec::decode_u64("counter", &v),
                None => Ok(0),
            }
        };
        let (events, processed) = (counter(EVENTS_COUNTER)?, counter(PROCESSED_COUNTER)?);
        drop(paused);
        let paused_ms = u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX);
        rewritten += write_changed(&mut out, last)?;

        let mut info = BackupInfo {
            format: FORMAT,
            created_at,
            events,
            processed,
            trees: all.len() as u64,
            entries: entries + rewritten,
            rewritten,
            bytes: 0,
            paused_ms: Some(paused_ms),
        };
        let summary = serde_json::to_vec(&info).map_err(|e| StoreError::corrupt(e.to_string()))?;
        out.put(&[END])?;
        out.put_len_prefixed(&summary)?;
        info.bytes = out.finish()?;
        tracing::info!(
            events = info.events,
            entries = info.entries,
            rewritten = info.rewritten,
            bytes = info.bytes,
            paused_ms,
            "backup taken"
        );
        Ok(info)
    }
}

/// Each tree's changed keys with their current values (`None`: removed), in key order.
type Changed = Vec<(sled::IVec, Vec<(sled::IVec, Option<sled::IVec>)>)>;

/// Reads the current value of each changed key, tree by tree.
fn read_changed(
    db: &sled::Db,
    names: &[sled::IVec],
    changed: Vec<HashSet<sled::IVec>>,
) -> Result<Changed> {
    let mut read = Vec::new();
    for (name, keys) in names.iter().zip(changed) {
        if keys.is_empty() {
            continue;
        }
        let tree = db.open_tree(name)?;
        let mut keys: Vec<sled::IVec> = keys.into_iter().collect();
        keys.sort_unstable();
        let entries = keys
            .into_iter()
            .map(|key| Ok((key.clone(), tree.get(&key)?)))
            .collect::<Result<Vec<_>>>()?;
        read.push((name.clone(), entries));
    }
    Ok(read)
}

/// Writes keys and their values (or removals) read by [`read_changed`]; returns how
/// many.
fn write_changed(out: &mut Writing<impl Write>, changed: Changed) -> Result<u64> {
    let mut n = 0;
    for (name, entries) in changed {
        out.tree(&name)?;
        for (key, value) in entries {
            match value {
                Some(value) => out.entry(&key, &value)?,
                None => out.removal(&key)?,
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Copies a whole tree; returns how many entries.
fn copy_tree(out: &mut Writing<impl Write>, tree: &sled::Tree) -> Result<u64> {
    out.tree(&tree.name())?;
    let mut n = 0;
    for entry in tree.iter() {
        let (key, value) = entry?;
        out.entry(&key, &value)?;
        n += 1;
    }
    Ok(n)
}

/// The keys written in each watched tree, collected by a thread of its own: sled hands
/// each write to a watcher through a bounded channel and blocks the writer when it is
/// full, so the watcher must keep draining however slowly the copy goes (and while the
/// backup waits for the pause, which those writers hold up).
struct Watch {
    changed: Arc<parking_lot::Mutex<Vec<HashSet<sled::IVec>>>>,
    stop: Arc<AtomicBool>,
    /// `None` once joined.
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Drop for Watch {
    /// A backup that failed half-way stops its watch too (the thread drops the
    /// subscriptions as it ends).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Watch {
    fn start(db: &sled::Db, names: &[sled::IVec]) -> Result<Watch> {
        let mut subscribers = names
            .iter()
            .map(|name| Ok(db.open_tree(name)?.watch_prefix(b"")))
            .collect::<Result<Vec<_>>>()?;
        let changed = Arc::new(parking_lot::Mutex::new(vec![HashSet::new(); names.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let (collected, stopping) = (changed.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("flywheel-backup-watch".into())
            .spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                let mut seen = Vec::new();
                loop {
                    // Read before draining: once set, writes have stopped, so this drain
                    // takes everything that is left.
                    let last = stopping.load(Ordering::Acquire);
                    for (tree, subscriber) in subscribers.iter_mut().enumerate() {
                        loop {
                            match Pin::new(&mut *subscriber).poll(&mut cx) {
                                Poll::Ready(Some(event)) => seen.push((tree, event.key().clone())),
                                Poll::Ready(None) => return Err(StoreError::Closed),
                                Poll::Pending => break,
                            }
                        }
                    }
                    if seen.is_empty() {
                        if last {
                            return Ok(());
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        continue;
                    }
                    let mut changed = collected.lock();
                    for (tree, key) in seen.drain(..) {
                        changed[tree].insert(key);
                    }
                    drop(changed);
                    if last {
                        return Ok(());
                    }
                }
            })
            .map_err(|e| StoreError::Spawn(e.to_string()))?;
        Ok(Watch {
            changed,
            stop,
            thread: Some(thread),
        })
    }

    /// The keys written since the last call (or since the start), and a fresh start. A
    /// write whose announcement is still on its way shows up in the next call's keys.
    fn take(&self) -> Vec<HashSet<sled::IVec>> {
        let mut changed = self.changed.lock();
        let fresh = vec![HashSet::new(); changed.len()];
        std::mem::replace(&mut *changed, fresh)
    }

    /// Every key written since the last [`Watch::take`]; call with writes paused.
    fn finish(mut self) -> Result<Vec<HashSet<sled::IVec>>> {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| StoreError::corrupt("the backup's watch thread panicked"))??;
        }
        Ok(std::mem::take(&mut *self.changed.lock()))
    }
}

/// Reads a whole backup and checks it (format, framing, totals and hash) without
/// writing anything: what `flywheel restore --check` reports.
pub fn read_backup(input: impl Read) -> Result<BackupInfo> {
    read(input, |_| Ok(()))
}

/// Restores a backup into `dir`, which must not hold a store yet, and returns what it
/// held. The entries go to a sibling directory first and move into `dir` only once the
/// whole file has been read and its hash checked; the restored store is then opened
/// once to check that its event count is the backup's. A server started on `dir` then
/// processes the events the backup held without an outcome.
pub fn restore(input: impl Read, dir: &Path) -> Result<BackupInfo> {
    if dir.exists() && !is_empty_dir(dir)? {
        return Err(StoreError::InvalidBackup {
            reason: format!(
                "{} is not empty: restore into a new data directory (or move the old store away first)",
                dir.display()
            ),
        });
    }
    let staging = staging_dir(dir);
    if staging.exists() {
        // Left by a restore that failed half-way; it was never a store.
        std::fs::remove_dir_all(&staging).map_err(io_error("removing an old staging directory"))?;
    }
    let result = restore_into(input, &staging);
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(io_error("replacing the empty store directory"))?;
    }
    std::fs::rename(&staging, dir).map_err(io_error("moving the restored store in place"))?;
    let store = Store::open(dir, StoreOptions::default())?;
    let events = store.count() as u64;
    if events != info.events {
        return Err(StoreError::InvalidBackup {
            reason: format!(
                "the restored store counts {events} events, the backup says {}",
                info.events
            ),
        });
    }
    Ok(info)
}

fn restore_into(input: impl Read, staging: &Path) -> Result<BackupInfo> {
    let db = sled::Config::new()
        .path(staging)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    // The tree being restored, and its writes not applied yet.
    let mut tree: Option<sled::Tree> = None;
    let (mut batch, mut pending) = (sled::Batch::default(), 0_usize);
    let info = read(input, |record| {
        match record {
            Record::Tree(name) => {
                if let Some(t) = &tree {
                    t.apply_batch(std::mem::take(&mut batch))?;
                }
                pending = 0;
                tree = Some(db.open_tree(name)?);
            }
            Record::Entry(key, value) => {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
                pending += 1;
                if pending >= RESTORE_BATCH
                    && let Some(t) = &tree
                {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
        }
        Ok(())
    })?;
    if let Some(t) = &tree {
        t.apply_batch(batch)?;
    }
    db.flush()?;
    Ok(info)
}

/// One record of a backup, as [`read`] hands it on.
enum Record<'a> {
    /// The records that follow are for this tree.
    Tree(&'a [u8]),
    /// Set a key (`Some`) or remove it (`None`).
    Entry(&'a [u8], Option<&'a [u8]>),
}

/// Parses a backup, handing each record on; errors on anything but a whole, undamaged
/// file of a format this code reads.
fn read(input: impl Read, mut on: impl FnMut(Record<'_>) -> Result<()>) -> Result<BackupInfo> {
    let mut r = Reading::new(BufReader::with_capacity(1 << 20, input));
    let mut magic = [0; 16];
    r.exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a Flywheel backup (wrong magic bytes)"));
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(invalid(&format!(
            "backup format {format}; this build reads format {FORMAT}"
        )));
    }
    let (mut trees, mut entries) = (HashSet::new(), 0_u64);
    let mut in_tree = false;
    loop {
        match r.u8()? {
            TREE => {
                let name = r.len_prefixed()?;
                on(Record::Tree(&name))?;
                // A name comes again for each round's records.
                trees.insert(name);
                in_tree = true;
            }
            ENTRY if in_tree => {
                let key = r.len_prefixed()?;
                let value = r.len_prefixed()?;
                on(Record::Entry(&key, Some(&value)))?;
                entries += 1;
            }
            REMOVAL if in_tree => {
                on(Record::Entry(&r.len_prefixed()?, None))?;
                entries += 1;
            }
            END => break,
            other => return Err(invalid(&format!("unexpected record tag {other:#04x}"))),
        }
    }
    let summary = r.len_prefixed()?;
    let computed = *r.hasher.finalize().as_bytes();
    let mut stored = [0; 32];
    r.inner
        .read_exact(&mut stored)
        .map_err(|_| invalid("truncated: the file ends inside its checksum"))?;
    if stored != computed {
        return Err(invalid("checksum mismatch: the file is damaged"));
    }
    let mut rest = [0; 1];
    if r.inner
        .read(&mut rest)
        .map_err(io_error("reading the backup"))?
        != 0
    {
        return Err(invalid("trailing bytes after the checksum"));
    }
    let mut info: BackupInfo = serde_json::from_slice(&summary)
        .map_err(|e| invalid(&format!("unreadable summary: {e}")))?;
    if (info.trees, info.entries) != (trees.len() as u64, entries) {
        return Err(invalid("its totals do not match its records"));
    }
    info.bytes = r.read + 32;
    Ok(info)
}

fn invalid(reason: &str) -> StoreError {
    StoreError::InvalidBackup {
        reason: reason.to_owned(),
    }
}

fn io_error(what: &'static str) -> impl Fn(io::Error) -> StoreError {
    move |e| StoreError::Io {
        what,
        message: e.to_string(),
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    let mut entries = std::fs::read_dir(dir).map_err(io_error("reading the store directory"))?;
    Ok(entries.next().is_none())
}

/// `<dir>.restoring`, beside `dir` so that the final move is a rename.
fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    dir.with_file_name(name)
}

/// Writes a backup: small pieces into a buffer, hashed and counted in big chunks on
/// their way out (hashing each small piece cost more than copying it, under the pause).
struct Writing<W: Write> {
    buf: BufWriter<Hashed<W>>,
}

/// What the buffer writes to: hashes and counts every byte on its way to `inner`.
struct Hashed<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Writing<W> {
    fn new(inner: W) -> Self {
        let hashed = Hashed {
            inner,
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        Self {
            buf: BufWriter::with_capacity(1 << 20, hashed),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf
            .write_all(bytes)
            .map_err(io_error("writing the backup"))
    }

    fn put_len_prefixed(&mut self, bytes: &[u8]) -> Result<()> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| StoreError::corrupt("a stored key or value over 4 GiB"))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }

    fn tree(&mut self, name: &[u8]) -> Result<()> {
        self.put(&[TREE])?;
        self.put_len_prefixed(name)
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put(&[ENTRY])?;
        self.put_len_prefixed(key)?;
        self.put_len_prefixed(value)
    }

    fn removal(&mut self, key: &[u8]) -> Result<()> {
        self.put(&[REMOVAL])?;
        self.put_len_prefixed(key)
    }

    /// Writes the hash of everything so far after it, and returns the file's size.
    fn finish(mut self) -> Result<u64> {
        let fail = io_error("writing the backup");
        self.buf.flush().map_err(&fail)?;
        let hashed = self.buf.get_mut();
        let hash = *hashed.hasher.finalize().as_bytes();
        hashed.inner.write_all(&hash).map_err(&fail)?;
        hashed.inner.flush().map_err(&fail)?;
        Ok(hashed.written + hash.len() as u64)
    }
}

/// A reader that hashes and counts what it reads, and says "truncated" at an early end.
struct Reading<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
}

impl<R: Read> Reading<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            read: 0,
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("truncated: the file ends before its checksum")
            } else {
                io_error("reading the backup")(e)
            }
        })?;
        self.hasher.update(buf);
        self.read += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8> {
        let mut b = [0; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn len_prefixed(&mut self) -> Result<Vec<u8>> {
        let len = self.u32()? as usize;
        // Grow as the bytes arrive, so a damaged length cannot ask for 4 GiB up front.
        let mut buf = Vec::with_capacity(len.min(1 << 20));
        let want = len as u64;
        let got = (&mut self.inner)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(io_error("reading the backup"))?;
        if got as u64 != want {
            return Err(invalid("truncated: the file ends before its checksum"));
        }
        self.hasher.update(&buf);
        self.read += want;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests;
