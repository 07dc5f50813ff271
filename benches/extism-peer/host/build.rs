//! Builds `guest/` (the Extism plugin) for wasm32-unknown-unknown with the workspace's
//! `guest` profile, so that every run measures the scorers as they are in the tree,
//! and tells the harness where the module is.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let peer = manifest_dir
        .parent()
        .expect("host/ is in benches/extism-peer")
        .to_path_buf();
    let root = peer
        .parent()
        .and_then(|b| b.parent())
        .expect("benches/extism-peer is two levels below the repository root")
        .to_path_buf();
    for watched in [
        peer.join("guest"),
        peer.join("sdk"),
        peer.join("Cargo.toml"),
        peer.join("Cargo.lock"),
        root.join("plugins/sdk/src"),
        root.join("plugins/examples/satisfaction/src"),
        root.join("plugins/examples/groundedness/src"),
        root.join("plugins/examples/sensitive/src"),
        root.join("host/model/src"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    // A target dir of its own: the outer build holds the lock on the default one.
    let target_dir = peer.join("target").join("guest-build");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&peer)
        .args([
            "build",
            "--package",
            "extism-peer-guest",
            "--profile",
            "guest",
            "--target",
            "wasm32-unknown-unknown",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .status()
        .expect("run cargo to build the Extism guest");
    assert!(
        status.success(),
        "building benches/extism-peer/guest for wasm32-unknown-unknown failed \
         (is the target installed? `rustup target add wasm32-unknown-unknown`)"
    );
    let wasm = target_dir
        .join("wasm32-unknown-unknown")
        .join("guest")
        .join("extism_peer_guest.wasm");
    println!("cargo:rustc-env=EXTISM_PEER_GUEST_WASM={}", wasm.display());
    println!(
        "cargo:rustc-env=EXTISM_PEER_TARGET_DIR={}",
        peer.join("target").display()
    );
    println!(
        "cargo:rustc-env=EXTISM_PEER_PLUGINS_DIR={}",
        root.join("target").join("flywheel-plugins").display()
    );
}
