//! Builds `plugins/` for wasm32-wasip2 (in `target/wasm-plugins`, the directory the
//! tests and `cargo xtask` share) and tells the benches where the components are,
//! so that `cargo bench` always measures the plugins as they are in the tree.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("benches/ is in the workspace")
        .to_path_buf();
    let plugins = root.join("plugins");
    for watched in ["sdk", "examples", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let target_dir = root.join("target").join("wasm-plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .status()
        .expect("run cargo to build the plugins (is the wasm32-wasip2 target installed? `cargo xtask plugins` adds it)");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed"
    );
    let artifacts = target_dir.join("wasm32-wasip2").join("release");
    println!(
        "cargo:rustc-env=FLYWHEEL_BENCH_WASM_DIR={}",
        artifacts.display()
    );
    println!(
        "cargo:rustc-env=FLYWHEEL_BENCH_PLUGINS_DIR={}",
        plugins.join("examples").display()
    );
}
