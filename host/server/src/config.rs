//! The server's configuration: one TOML file, every key optional, defaults that run
//! locally. Unknown keys are refused at start-up with the key's name, so a typo never
//! silently falls back to a default. `config.example.toml` lists every key.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The longest `commit-delay-us` accepted: 100 ms. Past a few milliseconds a batch
/// gathers little more and every acknowledgement in it waits.
pub const MAX_COMMIT_DELAY_US: u64 = 100_000;

/// Everything `flywheel serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the sled store and the compiled-plugin cache live.
    pub data_dir: PathBuf,
    /// Directory of `<name>.wasm` + `<name>.toml` plugin pairs to load at start-up.
    /// Unset: `target/flywheel-plugins` when it exists (the examples staged by
    /// `cargo xtask`), otherwise no plugins.
    pub plugins_dir: Option<PathBuf>,
    /// Acknowledge events only once they are flushed to disk. Turn off only for
    /// throw-away data or to measure what durability costs.
    pub durable: bool,
    /// Microseconds the store may hold a group commit open for more events once several
    /// are arriving together (0, the default: commit at once). Each durable commit is
    /// an `fsync` and a round of thread wake-ups whatever its size, so at moderate load,
    /// when commits carry a few events each, this is most of the server's CPU; a delay of
    /// about 1000 cut it by 8-27 % between 1,000 and 8,000 events/s (BENCHMARKS.md) for
    /// 0.25-1.35 ms more median latency. A lone request is never held, nor a batch that
    /// already has many waiting, and the wait ends early once requests stop coming. At
    /// full load it makes no difference beyond the noise of the measurements: it is for
    /// steady moderate traffic, at the price of that latency.
    pub commit_delay_us: u64,
    /// Pipeline worker threads; 0 means one per core.
    pub workers: usize,
    /// Request and event limits.
    pub limits: RequestLimits,
    /// How the pipeline treats plugins.
    pub pipeline: PipelineConfig,
    /// Prompt registry and refiners.
    pub prompts: PromptsConfig,
    /// Bearer tokens. None configured: the API is open, and only loopback is allowed.
    pub tokens: Vec<TokenConfig>,
    /// Review queues declared by an admin (queues that routers name exist without this).
    pub queues: Vec<QueueConfig>,
    /// How long events are kept.
    pub retention: RetentionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("flywheel-data"),
            plugins_dir: None,
            durable: true,
            commit_delay_us: 0,
            workers: 0,
            limits: RequestLimits::default(),
            pipeline: PipelineConfig::default(),
            prompts: PromptsConfig::default(),
            tokens: Vec::new(),
            queues: Vec::new(),
            retention: RetentionConfig::default(),
        }
    }
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RequestLimits {
    /// Largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Most events in one batch.
    pub max_batch: usize,
    /// Longest `input`, `output`, passage or feedback text, in bytes.
    pub max_text_bytes: usize,
    /// Most retrieved-context passages per event.
    pub max_context_passages: usize,
    /// Most metadata entries per event.
    pub max_metadata_entries: usize,
    /// Longest id (event, trace, session, user) or short field, in bytes.
    pub max_id_bytes: usize,
    /// Most client connections open at once. Past it new connections wait in the
    /// kernel's accept queue until one closes, so that clients cannot take every file
    /// descriptor the store and the plugin loader need. At start-up the process's soft
    /// open-file limit is raised (up to the hard one) to make room; where the hard limit
    /// is too low, this is lowered to fit, with a warning.
    pub max_connections: NonZeroUsize,
    /// Milliseconds a client may take to send a request's headers, or to start its next
    /// request on a kept-alive connection; then the connection is closed. Without it a
    /// client that connects and sends nothing holds its connection for ever.
    pub header_timeout_ms: NonZeroU64,
    /// Milliseconds a request body may go without a byte arriving; then the request is
    /// answered 408 `request_timeout` and the connection closed.
    pub body_timeout_ms: NonZeroU64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_batch: 1000,
            max_text_bytes: 64 << 10,
            max_context_passages: 64,
            max_metadata_entries: 64,
            max_id_bytes: 256,
            max_connections: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            header_timeout_ms: NonZeroU64::new(30_000).unwrap_or(NonZeroU64::MIN),
            body_timeout_ms: NonZeroU64::new(30_000).unwrap_or(NonZeroU64::MIN),
        }
    }
}

/// How the pipeline runs plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PipelineConfig {
    /// Events waiting for a worker before new ones are left for the backlog sweeper.
    pub queue_capacity: usize,
    /// Run each plugin call in a fresh instance (stronger isolation, slower).
    pub fresh_instance_per_call: bool,
    /// Quarantine a live plugin after this many failed calls in a row.
    pub quarantine_after: u64,
    /// Watch the plugin directory and hot-load what is dropped into it.
    pub watch_plugins: bool,
    /// Scheduling niceness of the pipeline workers (Linux; 0..=19). 0 (the default)
    /// shares the CPU equally, so under overload ingest slows down with the pipeline
    /// and processing keeps pace. Above 0, the threads that answer HTTP and commit
    /// events get the CPU first: bursts are acknowledged at full speed and wait on disk
    /// (never only in memory) for the pipeline to catch up when load drops; under
    /// sustained overload the backlog then grows (watch `flywheel_pipeline_backlog`).
    pub nice: i32,
    /// Most events acknowledged but not yet processed before `POST /v1/events` answers
    /// 503 `backlog_full` (with `Retry-After`); 0 (the default) = no limit, the disk is
    /// the buffer. Bounds how far processing may fall behind under sustained overload,
    /// and so the disk the backlog takes and how stale decisions get. `?wait=true`
    /// requests are still admitted: they are decided inline and add nothing to it.
    pub max_backlog: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            fresh_instance_per_call: false,
            quarantine_after: 20,
            watch_plugins: true,
            nice: 0,
            max_backlog: 0,
        }
    }
}

/// How long events are kept. Feedback carries what users typed and who they are, so
/// most deployments owe their users a limit; the default keeps everything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RetentionConfig {
    /// Erase events received more than this many days ago, with their outcomes, reviews
    /// and queue items (fractions allowed: 0.5 is twelve hours); 0, the default, keeps
    /// them for ever. Datasets already exported are files of their own and stay.
    pub max_age_days: f64,
    /// Remove queue audit entries (who claimed, reviewed or erased which item, when) older
    /// than this many days; 0, the default, keeps them for ever. Erasing an event leaves
    /// its entries (they hold no event content), so this is what bounds the trail.
    pub audit_max_age_days: f64,
    /// How often to look for events and audit entries past their age (and once at
    /// start-up).
    pub sweep_interval_secs: NonZeroU64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age_days: 0.0,
            audit_max_age_days: 0.0,
            sweep_interval_secs: NonZeroU64::new(3600).unwrap_or(NonZeroU64::MIN),
        }
    }
}

impl RetentionConfig {
    /// The age past which events are erased, if any.
    pub fn max_age(&self) -> Option<std::time::Duration> {
        days(self.max_age_days)
    }

    /// The age past which queue audit entries are removed, if any.
    pub fn audit_max_age(&self) -> Option<std::time::Duration> {
        days(self.audit_max_age_days)
    }
}

/// `n` days, if above zero (and representable).
fn days(n: f64) -> Option<std::time::Duration> {
    (n > 0.0)
        .then(|| std::time::Duration::try_from_secs_f64(n * 86_400.0).ok())
        .flatten()
}

/// Prompt registry settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PromptsConfig {
    /// Run the refiners automatically when a registered prompt version has collected
    /// this many new failures (low satisfaction, correction, clarification); 0 = never.
    pub refine_after_failures: u64,
    /// At most one automatic refine per prompt version in this many seconds: under load
    /// `refine-after-failures` comes round many times a second, and each refine reads
    /// the version's recent failures. Failures counted meanwhile wait for the next one.
    pub refine_min_interval_secs: u64,
}

impl Default for PromptsConfig {
    fn default() -> Self {
        Self {
            refine_after_failures: 25,
            refine_min_interval_secs: 300,
        }
    }
}

/// What a token may do. Each role includes the ones before it for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Submit events (applications).
    Ingest,
    /// Work queues (domain experts).
    Reviewer,
    /// Everything, plugins included (operators).
    Admin,
}

/// One bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenConfig {
    /// Who holds it: recorded as the actor in audit trails.
    pub name: String,
    pub role: Role,
    /// The secret itself; prefer `token-env` so it stays out of the file.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// A queue as an admin declared it: what it is for, and how its items are reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QueueConfig {
    /// The name routers use.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// What reviewers should look for; shown on the review screen.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Reviews (by different people) before an item is done.
    #[serde(default = "QueueConfig::default_reviewers")]
    pub reviewers_required: NonZeroU32,
    /// How long a claim holds an item before it goes back to the queue.
    #[serde(default = "QueueConfig::default_claim_timeout")]
    pub claim_timeout_secs: NonZeroU64,
}

impl QueueConfig {
    /// The settings of a queue nobody declared.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            description: None,
            instructions: None,
            reviewers_required: Self::default_reviewers(),
            claim_timeout_secs: Self::default_claim_timeout(),
        }
    }

    fn default_reviewers() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    fn default_claim_timeout() -> NonZeroU64 {
        NonZeroU64::new(600).unwrap_or(NonZeroU64::MIN)
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Read a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parse TOML text (used by `load` and by tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        if config.commit_delay_us > MAX_COMMIT_DELAY_US {
            return Err(ConfigError::Invalid(format!(
                "commit-delay-us = {} is over {MAX_COMMIT_DELAY_US}: a group commit held that long \
                 delays every acknowledgement in it",
                config.commit_delay_us
            )));
        }
        let days = config.retention.max_age_days;
        if !days.is_finite() || days < 0.0 || (days > 0.0 && config.retention.max_age().is_none()) {
            return Err(ConfigError::Invalid(format!(
                "retention.max-age-days = {days}: expected 0 (keep for ever) or a positive number of days"
            )));
        }
        for (i, q) in config.queues.iter().enumerate() {
            if config.queues[..i].iter().any(|p| p.name == q.name) {
                return Err(ConfigError::Invalid(format!(
                    "queue `{}` is declared twice",
                    q.name
                )));
            }
        }
        Ok(config)
    }

    /// The settings of `queue`: as declared, or the defaults.
    pub fn queue(&self, queue: &str) -> QueueConfig {
        self.queues
            .iter()
            .find(|q| q.name == queue)
            .cloned()
            .unwrap_or_else(|| QueueConfig::named(queue))
    }

    /// Resolve token secrets and check what serde cannot.
    pub fn resolve_tokens(&self) -> Result<Vec<(String, String, Role)>, ConfigError> {
        let mut out = Vec::new();
        for t in &self.tokens {
            let secret = match (&t.token, &t.token_env) {
                (Some(s), None) => s.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "token `{}`: environment variable {var} is not set",
                        t.name
                    ))
                })?,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "token `{}`: set exactly one of `token` and `token-env`",
                        t.name
                    )));
                }
            };
            if secret.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "token `{}` is shorter than 16 characters",
                    t.name
                )));
            }
            out.push((t.name.clone(), secret, t.role));
        }
        Ok(out)
    }

    /// The plugin directory actually used (see [`Config::plugins_dir`]).
    pub fn effective_plugins_dir(&self) -> Option<PathBuf> {
        self.plugins_dir.clone().or_else(|| {
            let staged = PathBuf::from("target/flywheel-plugins");
            staged.is_dir().then_some(staged)
        })
    }

    /// How many pipeline workers to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let text = include_str!("../../../config.example.toml");
        let config = Config::from_toml(text).expect("config.example.toml parses");
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(config.limits.max_batch, 1000);
        let labeling = config.queue("labeling");
        assert!(labeling.instructions.is_some());
        assert_eq!(labeling.reviewers_required.get(), 1);
        assert_eq!(labeling.claim_timeout_secs.get(), 600);
    }

    #[test]
    fn commit_delay_is_bounded() {
        assert_eq!(Config::default().commit_delay_us, 0);
        let ok = Config::from_toml("commit-delay-us = 1000\n").expect("parses");
        assert_eq!(ok.commit_delay_us, 1000);
        let err = Config::from_toml("commit-delay-us = 2000000\n").expect_err("too long");
        assert!(err.to_string().contains("commit-delay-us"), "{err}");
    }

    #[test]
    fn queues_default_and_refuse_zero_or_twice() {
        let config = Config::from_toml("[[queues]]\nname = 'legal'\nreviewers-required = 2\n")
            .expect("parses");
        assert_eq!(config.queue("legal").reviewers_required.get(), 2);
        assert_eq!(config.queue("other"), QueueConfig::named("other"));
        let zero = Config::from_toml("[[queues]]\nname = 'q'\nreviewers-required = 0\n");
        assert!(zero.is_err());
        let twice = Config::from_toml("[[queues]]\nname = 'q'\n[[queues]]\nname = 'q'\n")
            .expect_err("duplicate");
        assert!(twice.to_string().contains("twice"), "{twice}");
    }

    #[test]
    fn connection_limits_default_and_refuse_zero() {
        let limits = Config::default().limits;
        assert_eq!(limits.max_connections.get(), 10_000);
        assert_eq!(limits.header_timeout_ms.get(), 30_000);
        assert_eq!(limits.body_timeout_ms.get(), 30_000);
        for key in ["max-connections", "header-timeout-ms", "body-timeout-ms"] {
            let err = Config::from_toml(&format!("[limits]\n{key} = 0\n")).expect_err("zero");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn retention_keeps_for_ever_by_default_and_takes_fractions_of_days() {
        assert_eq!(Config::default().retention.max_age(), None);
        let half = Config::from_toml("[retention]\nmax-age-days = 0.5\n").expect("parses");
        assert_eq!(
            half.retention.max_age(),
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        for bad in ["-1", "nan", "inf", "1e300"] {
            let err =
                Config::from_toml(&format!("[retention]\nmax-age-days = {bad}\n")).expect_err(bad);
            assert!(err.to_string().contains("max-age-days"), "{err}");
        }
    }

    #[test]
    fn a_typo_names_the_key() {
        let err = Config::from_toml("listn = \"127.0.0.1:1\"").expect_err("typo");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn tokens_need_one_secret_of_reasonable_length() {
        let short =
            Config::from_toml("[[tokens]]\nname='a'\nrole='admin'\ntoken='x'\n").expect("parses");
        assert!(short.resolve_tokens().is_err());
        let ok =
            Config::from_toml("[[tokens]]\nname='a'\nrole='ingest'\ntoken='0123456789abcdef'\n")
                .expect("parses");
        assert_eq!(ok.resolve_tokens().expect("valid")[0].2, Role::Ingest);
    }
}
