//! The store's error types: one `StoreError` for the layer, and `KvError` for the plugin
//! key-value calls, whose quota refusal a plugin must be able to tell apart from a failure.
//! Errors here never carry sled types beyond the `Sled` variant, so callers map them once.

/// The result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store call failed. `Clone` so one failed group commit can answer every waiting
/// request with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption detected by sled).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be decoded: the data on disk is not what this code wrote.
    #[error("corrupt data: {what}")]
    Corrupt { what: String },
    /// Another process holds the data directory (a second server on the same `--data`?).
    #[error("the data directory {path} is in use by another process")]
    Locked { path: String },
    /// The committer thread could not be started.
    #[error("cannot start the committer thread: {0}")]
    Spawn(String),
    /// The committer thread has stopped, so no append can be made durable.
    #[error("the store is closed")]
    Closed,
    /// Too many append requests are waiting for the committer; retry later (HTTP 503).
    #[error("the store is busy: too many appends waiting")]
    Busy,
    /// An event the caller asked to store is unusable (e.g. an empty id).
    #[error("invalid event: {reason}")]
    InvalidEvent { reason: String },
    /// A listing filter names something that does not exist (e.g. an unknown route).
    #[error("invalid filter: {reason}")]
    InvalidFilter { reason: String },
    /// A listing cursor was not produced by this store.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A name used as part of a key (queue, plugin, tree) is empty or contains a NUL byte.
    #[error("invalid name: {name:?}")]
    InvalidName { name: String },
    /// No event is stored under this id.
    #[error("no event with id {id:?}")]
    NotFound { id: String },
    /// No item with this id is on the queue.
    #[error("no item {item:?} on queue {queue:?}")]
    NoSuchItem { queue: String, item: String },
    /// The caller holds no lease on the item (never claimed, released, or taken over).
    #[error("you do not hold item {item:?}: claim it first")]
    NotClaimed { item: String },
    /// The caller's lease on the item has passed; claim it again.
    #[error("your lease on item {item:?} has expired")]
    LeaseExpired { item: String },
    /// The item already has all the reviews it needs.
    #[error("item {item:?} is already done")]
    ItemDone { item: String },
    /// A backup file cannot be restored (damaged, truncated, another format), or the
    /// place to restore it into already holds a store.
    #[error("cannot restore: {reason}")]
    InvalidBackup { reason: String },
    /// Reading or writing a file outside sled failed (a backup, a restore).
    #[error("{what}: {message}")]
    Io { what: &'static str, message: String },
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt { what: what.into() }
    }
}

/// Why a plugin key-value call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// The write would take the plugin's usage (key + value bytes) past its quota;
    /// nothing was written.
    #[error("plugin key-value quota of {quota} bytes exceeded")]
    QuotaExceeded { quota: u64 },
    /// The key is empty or too long, or the plugin name is unusable.
    #[error("invalid key")]
    InvalidKey,
    /// The store failed underneath.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for KvError {
    fn from(e: sled::Error) -> Self {
        KvError::Store(StoreError::Sled(e))
    }
}

/// Turns a sled transaction result into ours: aborts carry our error, storage failures
/// become `Sled`.
pub(crate) fn from_tx<T, E: From<sled::Error>>(
    r: sled::transaction::TransactionResult<T, E>,
) -> std::result::Result<T, E> {
    match r {
        Ok(v) => Ok(v),
        Err(sled::transaction::TransactionError::Abort(e)) => Err(e),
        Err(sled::transaction::TransactionError::Storage(e)) => Err(E::from(e)),
    }
}
