//! Building the guest plugins from inside another cargo build: the build scripts of the
//! end-to-end tests and of the benches, and `cargo xtask`. One place knows the target,
//! where the components land, and which of the outer build's environment must not leak
//! into the nested cargo, so that the three always build (and reuse) the same artefacts.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target plugins are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// A `cargo` command for a nested build. Inside a build script the outer build's
/// rustflags, target and jobserver are in the environment; passed on, they would build
/// the plugins for the host's flags or wait on a jobserver that is not theirs.
pub fn nested_cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The plugins' own target dir under the workspace `root`. Not the outer one: a nested
/// cargo on the same dir would wait for ever on the outer build's lock.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("wasm-plugins")
}

/// Where the release components land (`<crate_name>.wasm`).
pub fn artifacts_dir(root: &Path) -> PathBuf {
    target_dir(root).join(WASM_TARGET).join("release")
}

/// `cargo build --release --target wasm32-wasip2` of the `plugins/` workspace.
pub fn build_command(root: &Path) -> Command {
    let mut cmd = nested_cargo();
    cmd.current_dir(root.join("plugins"))
        .args(["build", "--release", "--target", WASM_TARGET])
        .env("CARGO_TARGET_DIR", target_dir(root));
    cmd
}

/// For build scripts: build the plugins quietly, ask cargo to rerun the script when the
/// plugin sources or the WIT contract change, and return [`artifacts_dir`]. Panics on
/// failure (how a build script reports), naming `how_to_fix`.
pub fn build_from_build_script(root: &Path, how_to_fix: &str) -> PathBuf {
    let plugins = root.join("plugins");
    // Not `plugins/` as a whole: its own `target/` would rerun the script on every build.
    for watched in ["sdk", "examples", "hostile", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    let status = build_command(root)
        .arg("--quiet")
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the plugins ({e}); {how_to_fix}"));
    assert!(
        status.success(),
        "building plugins/ for {WASM_TARGET} failed; {how_to_fix}"
    );
    artifacts_dir(root)
}
