//! The `flywheel` binary: parses arguments, sets up logging, and calls the library.
//! `anyhow` lives here and in `cli`, nowhere else.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;

/// mimalloc instead of the system allocator: a request allocates many small, short-lived
/// buffers (JSON values, sled nodes, hyper buffers), and glibc's malloc/free was ~19%
/// of the server's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flywheel: feedback on LLM answers, turned into action by sandboxed policy plugins.
#[derive(Debug, Parser)]
#[command(name = "flywheel", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(cli::ServeArgs),
    /// Try and check policy plugins without a server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Replay a candidate plugin over the events stored in a data directory (the
    /// server must not be running on it) and report what would change.
    Replay(cli::ReplayArgs),
    /// Export a fine-tuning dataset (sft, dpo, kto) as JSONL from a data directory
    /// (the server must not be running on it).
    Export(cli::ExportArgs),
    /// Erase events for good, with their outcomes, reviews and queue items, from a data
    /// directory (the server must not be running on it); as `DELETE /v1/events`.
    Erase(cli::EraseArgs),
    /// Back up a stopped server's data directory into one file (a running server:
    /// `GET /v1/backup`).
    Backup(cli::BackupArgs),
    /// Restore a backup into a new data directory, or check one with `--check`.
    Restore(cli::RestoreArgs),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin once on an event and print its output and what the call cost.
    Run(cli::RunArgs),
    /// Check that a component is a valid plugin of its kind (world, imports, start-up).
    Check {
        /// The component (`.wasm`).
        wasm: PathBuf,
        /// Its manifest; default: `<file>.toml` or `plugin.toml` beside it, else the
        /// kind is detected from the exports.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.command {
        Command::Serve(a) => cli::serve(a),
        Command::Plugin(PluginCommand::Run(a)) => cli::plugin_run(a),
        Command::Replay(a) => cli::replay(a),
        Command::Export(a) => cli::export(a),
        Command::Erase(a) => cli::erase(a),
        Command::Backup(a) => cli::backup(a),
        Command::Restore(a) => cli::restore(a),
        Command::Plugin(PluginCommand::Check { wasm, manifest }) => {
            cli::plugin_check(&wasm, manifest.as_deref())
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
