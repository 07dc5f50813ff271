//! `cargo xtask`: the project's own commands, so that a fresh clone needs no setup.
//!
//! `serve` builds the example plugins and runs the server with them; `test` runs every
//! test (plugins' native tests, the host's unit tests, the end-to-end suite); `plugins`
//! only builds and stages the plugins; `bench` runs the benchmarks (`cargo bench`, then
//! the Extism peer harness); `bench-extism` runs only the Extism peer harness
//! (`benches/extism-peer`, a workspace of its own). Each installs the wasm targets it
//! needs first if they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use flywheel_plugin_build::WASM_TARGET;

/// The target of the Extism peer's guest (`benches/extism-peer/guest`).
const EXTISM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    match cmd.as_str() {
        "serve" => serve(&root, &rest),
        "test" => test(&root, &rest),
        "plugins" => {
            let dir = stage_plugins(&root)?;
            println!("example plugins staged in {}", dir.display());
            Ok(())
        }
        "bench" => bench(&root, &rest),
        "bench-extism" => bench_extism(&root, &rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 serve [ARGS]   build the example plugins and run `flywheel serve` with them\n  \
                 test [ARGS]    run the whole test suite (ARGS go to cargo nextest)\n  \
                 plugins        build the plugins for {WASM_TARGET} and stage them in target/flywheel-plugins\n  \
                 bench [ARGS]   run the benchmarks (cargo bench, ARGS go to it), then the Extism peer harness\n  \
                 bench-extism [ARGS]\n                \
                 run only the Extism peer harness (benches/extism-peer; ARGS go to it, e.g. --quick)"
            );
            if cmd.is_empty() || cmd == "help" || cmd == "--help" {
                Ok(())
            } else {
                bail!("unknown command `{cmd}`")
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `rustup target add` is idempotent and fast when the target is already there.
fn ensure_wasm_target() -> Result<()> {
    ensure_target(WASM_TARGET)
}

fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .with_context(|| format!("running rustup (needed to add the {target} target)"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target]))
}

/// Build every plugin crate for wasm32-wasip2 in its own target dir (the same one the
/// test suite's build script uses, so the work is shared).
fn build_plugins(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    run(&mut flywheel_plugin_build::build_command(root))?;
    Ok(flywheel_plugin_build::artifacts_dir(root))
}

/// Copy each example plugin's component and manifest into one directory, as
/// `<name>.wasm` + `<name>.toml`: the layout `flywheel serve --plugins` reads.
fn stage_plugins(root: &Path) -> Result<PathBuf> {
    let artifacts = build_plugins(root)?;
    let out = root.join("target").join("flywheel-plugins");
    std::fs::create_dir_all(&out)?;
    let examples = root.join("plugins").join("examples");
    let mut entries: Vec<_> = std::fs::read_dir(&examples)
        .with_context(|| format!("reading {}", examples.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let manifest = entry.path().join("plugin.toml");
        if !manifest.exists() {
            continue;
        }
        let crate_name = entry.file_name().to_string_lossy().to_string();
        let name = plugin_name(&manifest)?;
        let wasm = artifacts.join(format!(
            "{}.wasm",
            package_name(&entry.path())?.replace('-', "_")
        ));
        std::fs::copy(&wasm, out.join(format!("{name}.wasm")))
            .with_context(|| format!("copying {} (crate {crate_name})", wasm.display()))?;
        std::fs::copy(&manifest, out.join(format!("{name}.toml")))?;
    }
    Ok(out)
}

fn toml_string_key(path: &Path, key: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .with_context(|| format!("no `{key}` in {}", path.display()))
}

fn plugin_name(manifest: &Path) -> Result<String> {
    toml_string_key(manifest, "name")
}

fn package_name(crate_dir: &Path) -> Result<String> {
    toml_string_key(&crate_dir.join("Cargo.toml"), "name")
}

fn serve(root: &Path, rest: &[String]) -> Result<()> {
    let plugins = stage_plugins(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args([
            "run",
            "--release",
            "--package",
            "flywheel",
            "--",
            "serve",
            "--plugins",
        ])
        .arg(&plugins)
        .args(rest);
    run(&mut cmd)
}

fn test(root: &Path, rest: &[String]) -> Result<()> {
    stage_plugins(root)?;
    // The plugins' own logic, natively.
    run(cargo()
        .current_dir(root.join("plugins"))
        .args(["test", "--quiet"]))?;
    // The end-to-end tests start the real binary.
    run(cargo()
        .current_dir(root)
        .args(["build", "--package", "flywheel", "--bin", "flywheel"]))?;
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if nextest {
        run(cargo()
            .current_dir(root)
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(rest))?;
    } else {
        run(cargo()
            .current_dir(root)
            .args(["test", "--workspace"])
            .args(rest))?;
    }
    run(cargo()
        .current_dir(root)
        .args(["test", "--workspace", "--doc", "--quiet"]))
}

fn bench(root: &Path, rest: &[String]) -> Result<()> {
    stage_plugins(root)?;
    run(cargo()
        .current_dir(root)
        .args(["bench", "--workspace"])
        .args(rest))?;
    run_extism_peer(root, &[])
}

/// The Extism peer harness alone (issue #7): our component scorers against the same
/// code as an Extism plugin. Its own workspace (extism brings a second wasmtime), so
/// it is built with `--manifest-path`, into `benches/extism-peer/target`.
fn bench_extism(root: &Path, rest: &[String]) -> Result<()> {
    stage_plugins(root)?;
    run_extism_peer(root, rest)
}

fn run_extism_peer(root: &Path, rest: &[String]) -> Result<()> {
    ensure_target(EXTISM_TARGET)?;
    run(cargo()
        .current_dir(root)
        .args([
            "run",
            "--release",
            "--manifest-path",
            "benches/extism-peer/host/Cargo.toml",
            "--",
        ])
        .args(rest))
}
