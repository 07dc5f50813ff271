//! Builds `plugins/` for wasm32-wasip2 (in `target/wasm-plugins`, the directory the
//! tests and `cargo xtask` share) and tells the benches where the components are,
//! so that `cargo bench` always measures the plugins as they are in the tree.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("benches/ is in the workspace")
        .to_path_buf();
    let plugins = root.join("plugins");
    let artifacts = flywheel_plugin_build::build_from_build_script(
        &root,
        "is the wasm32-wasip2 target installed? `cargo xtask plugins` adds it",
    );
    println!(
        "cargo:rustc-env=FLYWHEEL_BENCH_WASM_DIR={}",
        artifacts.display()
    );
    println!(
        "cargo:rustc-env=FLYWHEEL_BENCH_PLUGINS_DIR={}",
        plugins.join("examples").display()
    );
}
