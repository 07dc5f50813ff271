//! The command-line front doors: `serve`, `plugin run`, `plugin check`. Each is a thin
//! layer over the library; they differ from the HTTP API only in how they are asked.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use flywheel::config::Config;
use flywheel::input::parse_event;
use flywheel_model::{PluginKind, Prompt, Score, now_ms};
use flywheel_runtime::{
    CallOutcome, Manifest, MemoryKv, Plugin, PreparedEvent, PreparedScores, Runtime, RuntimeOptions,
};

/// `flywheel serve` options; flags override the config file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (see config.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7070.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (sled store, compiled-plugin cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Directory of `<name>.wasm` + `<name>.toml` plugins to load.
    #[arg(long)]
    plugins: Option<PathBuf>,
}

/// `flywheel plugin run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    wasm: PathBuf,
    /// Event JSON in the API's form, inline or in a file. For a refiner, give it once
    /// per failure, or once with a JSON array.
    #[arg(long, required = true, value_name = "JSON|FILE")]
    event: Vec<PathBuf>,
    /// Its manifest; default: `<file>.toml` or `plugin.toml` beside it, else defaults
    /// with the kind detected from the exports.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Override a config value (repeatable): `--config qa-sample-rate=0.5`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// For a router: a JSON array of scores (`[{"name", "value", "label", "reason"}]`),
    /// inline or in a file. Without it the router sees no scores.
    #[arg(long, value_name = "JSON|FILE")]
    scores: Option<PathBuf>,
    /// For a refiner: the prompt (`{"name", "version", "template"}`), inline or in a file.
    #[arg(long, value_name = "JSON|FILE")]
    prompt: Option<PathBuf>,
}

/// The store in a stopped server's data directory.
fn open_store(data: &Path) -> Result<flywheel_store::Store> {
    flywheel_store::Store::open(&data.join("store"), flywheel_store::StoreOptions::default())
        .with_context(|| {
            format!(
                "opening the store in {} (is a server running on it?)",
                data.display()
            )
        })
}

/// Which stored events a command reads: shared by `replay`, `export` and `erase`.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Events received at or after (ms since the Unix epoch).
    #[arg(long)]
    from: Option<u64>,
    /// Events received before (ms since the Unix epoch).
    #[arg(long)]
    to: Option<u64>,
    /// Only events of this prompt name.
    #[arg(long)]
    prompt: Option<String>,
    /// Only events of this prompt version.
    #[arg(long)]
    prompt_version: Option<String>,
}

/// `flywheel replay` options.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Data directory of a (stopped) server.
    #[arg(long, default_value = "flywheel-data")]
    data: PathBuf,
    /// A candidate component file; with `--manifest` (or `<file>.toml` beside it).
    #[arg(long, conflicts_with_all = ["plugin", "version"])]
    wasm: Option<PathBuf>,
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// A stored plugin (with `--version`: hash, hash prefix or manifest version).
    #[arg(long, requires = "version")]
    plugin: Option<String>,
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    select: SelectArgs,
    /// Only events whose stored route is this: accept, label, review, drop.
    #[arg(long)]
    route: Option<String>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<usize>,
    /// Example event ids kept per route change.
    #[arg(long, default_value_t = 5)]
    examples: usize,
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let store = open_store(&args.data)?;
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(args.data.join("cache")),
        ..RuntimeOptions::default()
    })?;
    let (manifest, wasm) = match (&args.wasm, &args.plugin, &args.version) {
        (Some(path), _, _) => {
            let wasm =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mpath = args
                .manifest
                .clone()
                .or_else(|| default_manifest(path))
                .context("--wasm needs --manifest")?;
            let text = std::fs::read_to_string(&mpath)
                .with_context(|| format!("reading {}", mpath.display()))?;
            (Manifest::from_toml(&text)?, wasm)
        }
        (None, Some(name), Some(version)) => {
            let entries = flywheel::registry::load_entries(&store)?;
            let entry = entries
                .get(name)
                .with_context(|| format!("no plugin named `{name}` in {}", args.data.display()))?;
            let record = entry
                .versions
                .iter()
                .find(|v| {
                    &v.hash == version
                        || (version.len() >= 8 && v.hash.starts_with(version.as_str()))
                        || &v.manifest.version == version
                })
                .with_context(|| format!("plugin `{name}` has no version `{version}`"))?;
            (
                record.manifest.clone(),
                flywheel::registry::load_blob(&store, &record.hash)?,
            )
        }
        _ => bail!("give a candidate: --wasm FILE [--manifest FILE], or --plugin NAME --version V"),
    };
    let options = flywheel::replay::ReplayOptions {
        filter: flywheel_store::EventFilter {
            from_ms: args.select.from,
            to_ms: args.select.to,
            prompt_name: args.select.prompt,
            prompt_version: args.select.prompt_version,
            route: args.route,
            ..Default::default()
        },
        limit: args.limit,
        examples: args.examples,
        threads: 0,
    };
    let report = flywheel::replay::replay(&store, &runtime, manifest, &wasm, &options)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "replayed {} events in {:.0} ms ({:.0} events/s); {} routes changed",
        report.events, report.elapsed_ms, report.events_per_second, report.routes_changed
    );
    Ok(ExitCode::SUCCESS)
}

/// `flywheel export` options: the same as `GET /v1/datasets/{kind}`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// sft, dpo or kto.
    kind: String,
    /// Data directory of a (stopped) server.
    #[arg(long, default_value = "flywheel-data")]
    data: PathBuf,
    /// Write here instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// trl (default) or openai.
    #[arg(long)]
    format: Option<String>,
    #[command(flatten)]
    select: SelectArgs,
    /// Only events routed to this queue.
    #[arg(long)]
    queue: Option<String>,
    /// 0..=1: skip rows of lower quality.
    #[arg(long)]
    min_quality: Option<f64>,
    /// Include events marked sensitive.
    #[arg(long)]
    include_sensitive: bool,
}

pub fn export(args: ExportArgs) -> Result<ExitCode> {
    use std::io::Write;
    let kind =
        flywheel::datasets::Kind::parse(&args.kind).context("the kind must be sft, dpo or kto")?;
    let query = flywheel::api::prompts::DatasetQuery {
        from: args.select.from,
        to: args.select.to,
        prompt: args.select.prompt,
        prompt_version: args.select.prompt_version,
        queue: args.queue,
        min_quality: args.min_quality,
        include_sensitive: args.include_sensitive,
        format: args.format,
        summary: Some(false),
    };
    let (filter, options) = query.options(kind).map_err(anyhow::Error::msg)?;
    let store = open_store(&args.data)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut builder = flywheel::datasets::Builder::new(kind, options);
    for record in store.scan(&filter) {
        if let Some(line) = builder.line(&record?) {
            out.write_all(line.as_bytes())?;
        }
    }
    out.flush()?;
    eprintln!("{}", serde_json::to_string(&builder.summary)?);
    Ok(ExitCode::SUCCESS)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    if let Some(plugins) = args.plugins {
        config.plugins_dir = Some(plugins);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(flywheel::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// Where a component's manifest is when none is named: `<file>.toml` or `plugin.toml`
/// beside it, else (a component just built, in `<project>/target/...`) the `plugin.toml`
/// of the crate it was built from, as the plugin README lays a crate out.
fn default_manifest(wasm: &Path) -> Option<PathBuf> {
    [
        wasm.with_extension("toml"),
        wasm.with_file_name("plugin.toml"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .or_else(|| crate_manifest(wasm))
}

/// The `plugin.toml` beside the `Cargo.toml` of the package `wasm` was built from,
/// looked for up to three levels below the project that holds the `target` directory.
fn crate_manifest(wasm: &Path) -> Option<PathBuf> {
    let wasm = std::fs::canonicalize(wasm).ok()?;
    let package = wasm.file_stem()?.to_string_lossy().replace('_', "-");
    let project = wasm
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))?
        .parent()?;
    let mut level = vec![project.to_path_buf()];
    let mut dirs = level.clone();
    for _ in 0..3 {
        level = level
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n != "target" && !n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.extend(level.iter().cloned());
    }
    dirs.into_iter().map(|d| d.join("plugin.toml")).find(|m| {
        let names_it = |cargo: &Path| -> Option<bool> {
            let text = std::fs::read_to_string(cargo).ok()?;
            let value: toml::Table = text.parse().ok()?;
            Some(value.get("package")?.get("name")?.as_str()? == package)
        };
        m.exists()
            && m.parent()
                .is_some_and(|d| names_it(&d.join("Cargo.toml")).unwrap_or(false))
    })
}

fn load(
    runtime: &Runtime,
    wasm_path: &Path,
    manifest: Option<&Path>,
    overrides: &[String],
) -> Result<Plugin> {
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let found = manifest
        .is_none()
        .then(|| default_manifest(wasm_path))
        .flatten();
    if let Some(path) = &found {
        eprintln!("note: manifest {}", path.display());
    }
    let mut manifest = match manifest.map(Path::to_path_buf).or(found) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Manifest::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => {
            let kind = runtime.detect_kind(&wasm)?;
            let stem = wasm_path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_default();
            eprintln!(
                "note: no manifest found ({} or plugin.toml beside it, or a crate's plugin.toml \
                 in the project): running as a {kind} with the default limits and no config; \
                 pass --manifest",
                wasm_path.with_extension("toml").display()
            );
            Manifest {
                name: if flywheel_runtime::manifest::valid_name(&stem) {
                    stem
                } else {
                    "plugin".into()
                },
                kind,
                version: "0.0.0".into(),
                description: String::new(),
                failure_mode: Default::default(),
                limits: Default::default(),
                config: Default::default(),
            }
        }
    };
    for kv in overrides {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--config `{kv}` is not KEY=VALUE"))?;
        manifest.config.insert(k.to_string(), v.to_string());
    }
    Ok(runtime.load(manifest, &wasm, Arc::new(MemoryKv::default()))?)
}

/// A JSON argument: a file's path, or the JSON itself (text starting with `{` or `[`
/// that names no file), so a quick try needs no file.
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let arg = path.to_string_lossy();
    let inline = arg.trim_start();
    if (inline.starts_with('{') || inline.starts_with('[')) && !path.exists() {
        return serde_json::from_str(inline).context("parsing the inline JSON argument");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_events(paths: &[PathBuf]) -> Result<Vec<flywheel_model::Event>> {
    let limits = Config::default().limits;
    let mut out = Vec::new();
    for path in paths {
        let value = read_json(path)?;
        let items = match value {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        for (i, item) in items.iter().enumerate() {
            let stem = match path.file_stem() {
                Some(stem) if path.exists() => stem.to_string_lossy(),
                _ => "event".into(),
            };
            let fallback = format!("{stem}-{i}");
            let event = parse_event(item, "", &limits, || fallback, now_ms())
                .with_context(|| format!("{}: invalid event", path.display()))?;
            out.push(event);
        }
    }
    Ok(out)
}

fn report<T: serde::Serialize>(plugin: &Plugin, outcome: CallOutcome<T>) -> Result<ExitCode> {
    for line in &outcome.logs {
        eprintln!("[{}] {}", line.level, line.message);
    }
    let cost = format!(
        "{} {} (limit {} ms): {:.3} ms, peak memory {:.1} MiB",
        plugin.kind(),
        plugin.id(),
        plugin.manifest().limits.timeout_ms,
        outcome.duration.as_secs_f64() * 1000.0,
        outcome.peak_memory as f64 / (1u64 << 20) as f64
    );
    match outcome.result {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            eprintln!("ok: {cost}");
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            eprintln!("failed ({}): {}", failure.class, failure.message);
            eprintln!("cost: {cost}");
            Ok(ExitCode::from(2))
        }
    }
}

pub fn plugin_run(args: RunArgs) -> Result<ExitCode> {
    let runtime = Runtime::new(RuntimeOptions {
        pooling: false,
        ..RuntimeOptions::default()
    })?;
    let plugin = load(&runtime, &args.wasm, args.manifest.as_deref(), &args.config)?;
    let events = read_events(&args.event)?;
    match plugin.kind() {
        PluginKind::Scorer | PluginKind::Router => {
            let [event] = events.as_slice() else {
                bail!(
                    "a {} takes exactly one event ({} given)",
                    plugin.kind(),
                    events.len()
                );
            };
            let prepared = PreparedEvent::new(event);
            if plugin.kind() == PluginKind::Scorer {
                report(&plugin, plugin.score(&prepared))
            } else {
                let scores: Vec<Score> = match &args.scores {
                    Some(path) => serde_json::from_value(read_json(path)?).with_context(|| {
                        format!("{}: expected an array of scores", path.display())
                    })?,
                    None => {
                        eprintln!("note: no --scores given; the router sees no scores");
                        Vec::new()
                    }
                };
                report(
                    &plugin,
                    plugin.route(&prepared, &PreparedScores::new(&scores)),
                )
            }
        }
        PluginKind::Refiner => {
            let path = args
                .prompt
                .as_ref()
                .context("a refiner needs --prompt <JSON or prompt.json>")?;
            let prompt: Prompt = serde_json::from_value(read_json(path)?).with_context(|| {
                format!("{}: expected {{name, version, template}}", path.display())
            })?;
            report(&plugin, plugin.refine(&prompt, &events))
        }
    }
}

pub fn plugin_check(wasm: &Path, manifest: Option<&Path>) -> Result<ExitCode> {
    let runtime = Runtime::new(RuntimeOptions {
        pooling: false,
        ..RuntimeOptions::default()
    })?;
    let plugin = load(&runtime, wasm, manifest, &[])?;
    plugin.warm_up().map_err(|f| anyhow::anyhow!("{f}"))?;
    let m = plugin.manifest();
    println!(
        "ok: {} is a valid {} for flywheel:policy@{} (hash {}; timeout {} ms, memory {} MiB, {})",
        plugin.id().name,
        m.kind,
        plugin.contract(),
        plugin.id().hash,
        m.limits.timeout_ms,
        m.limits.memory_mib,
        match m.failure_mode {
            flywheel_model::FailureMode::FailOpen => "fail-open",
            flywheel_model::FailureMode::FailClosed => "fail-closed",
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `flywheel erase` options: `DELETE /v1/events/{id}` and `DELETE /v1/events` for a
/// stopped server.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// Data directory of a (stopped) server.
    #[arg(long, default_value = "flywheel-data")]
    data: PathBuf,
    /// Erase the event with this id (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    #[command(flatten)]
    select: SelectArgs,
    /// Only events of this `user_id`.
    #[arg(long)]
    user_id: Option<String>,
    /// Only events of this `session_id`.
    #[arg(long)]
    session_id: Option<String>,
    /// Only events of this `trace_id`.
    #[arg(long)]
    trace_id: Option<String>,
    /// Only events answered by this model.
    #[arg(long)]
    model: Option<String>,
    /// Only events whose route is this: accept, label, review, drop, pending.
    #[arg(long)]
    route: Option<String>,
    /// Only events routed to this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only events with this feedback type: thumbs, rating, correction, clarification,
    /// comment, none.
    #[arg(long)]
    feedback: Option<String>,
}

/// Who erased, in the queues' audit trail, when it was done with `flywheel erase`.
const CLI_ACTOR: &str = "flywheel erase";

pub fn erase(args: EraseArgs) -> Result<ExitCode> {
    let filter = flywheel_store::EventFilter {
        from_ms: args.select.from,
        to_ms: args.select.to,
        prompt_name: args.select.prompt,
        prompt_version: args.select.prompt_version,
        user_id: args.user_id,
        session_id: args.session_id,
        trace_id: args.trace_id,
        model: args.model,
        route: args.route,
        queue: args.queue,
        feedback: args.feedback,
    };
    if args.ids.is_empty() && filter.is_empty() {
        anyhow::bail!(
            "name what to erase: --id, or a filter such as --user-id, --session-id or --to \
             (erasing every event is not done by accident)"
        );
    }
    let store = open_store(&args.data)?;
    let done = store.erase(args.ids, CLI_ACTOR)?;
    let mut total = flywheel_store::Erased::of(&done);
    let missing: Vec<String> = done
        .into_iter()
        .filter(|e| !e.erased)
        .map(|e| e.id)
        .collect();
    if !filter.is_empty() {
        total += store.erase_matching(&filter, CLI_ACTOR, |_| {})?;
    }
    store.flush()?;
    println!(
        "{}",
        serde_json::json!({"erased": total.events, "queue_items": total.queue_items, "not_found": missing})
    );
    Ok(ExitCode::SUCCESS)
}

/// `flywheel backup` options.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Data directory of a (stopped) server. For a running server, use
    /// `GET /v1/backup` instead.
    #[arg(long, default_value = "flywheel-data")]
    data: PathBuf,
    /// Where to write the backup (`-`: standard output).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn backup(args: BackupArgs) -> Result<ExitCode> {
    let store = open_store(&args.data)?;
    if args.out.as_os_str() == "-" {
        let info = store.backup(std::io::stdout().lock())?;
        eprintln!("{}", serde_json::to_string(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Into a temporary file beside it, renamed when whole: a failed backup never leaves
    // a file that looks like one.
    let dir = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let info = store.backup(file.as_file())?;
    file.as_file().sync_all().context("syncing the backup")?;
    file.persist(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&info)?);
    Ok(ExitCode::SUCCESS)
}

/// `flywheel restore` options.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup (from `GET /v1/backup` or `flywheel backup`; `-`: standard input).
    file: PathBuf,
    /// A new data directory to restore into; it must not hold a store yet.
    #[arg(long, required_unless_present = "check")]
    data: Option<PathBuf>,
    /// Only read the backup through and check it (framing, totals, checksum).
    #[arg(long, conflicts_with = "data")]
    check: bool,
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let input: Box<dyn std::io::Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?,
        )
    };
    let info = match args.data {
        // `--check` and `--data` exclude each other.
        Some(data) => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            flywheel_store::restore(input, &data.join("store"))?
        }
        None => flywheel_store::read_backup(input)?,
    };
    println!("{}", serde_json::to_string(&info)?);
    Ok(ExitCode::SUCCESS)
}
