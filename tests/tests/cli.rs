//! `flywheel plugin run` and `flywheel plugin check`: what a plugin author uses to try a
//! plugin without a server.

use std::process::Command;

use flywheel_tests::server::flywheel_bin;
use flywheel_tests::{fixtures, plugins};
use serde_json::Value;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(flywheel_bin())
        .args(args)
        .output()
        .expect("run flywheel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn fixture(name: &str) -> String {
    fixtures::dir()
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

#[test]
fn plugin_run_prints_the_output_and_the_cost() {
    let (ok, stdout, stderr) = run(&[
        "plugin",
        "run",
        plugins::SATISFACTION.wasm,
        "--manifest",
        plugins::SATISFACTION.manifest,
        "--event",
        &fixture("event_rating_four_of_five"),
    ]);
    assert!(ok, "{stderr}");
    let scores: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(scores[0]["name"], "satisfaction");
    assert_eq!(scores[0]["value"], 0.75);
    assert!(
        stderr.contains("ok: scorer satisfaction@") && stderr.contains(" ms, peak memory "),
        "{stderr}"
    );
}

#[test]
fn plugin_run_takes_config_overrides_and_router_scores() {
    let dir = tempfile::tempdir().expect("tmp");
    let scores = dir.path().join("scores.json");
    std::fs::write(&scores, r#"[{"name": "satisfaction", "value": 1.0}, {"name": "groundedness", "value": 0.9}, {"name": "sensitive", "value": 0.0}]"#).expect("write");
    let args = |rate: &'static str| {
        vec![
            "plugin".to_string(),
            "run".into(),
            plugins::HITL_ROUTER.wasm.into(),
            "--manifest".into(),
            plugins::HITL_ROUTER.manifest.into(),
            "--event".into(),
            fixture("event_thumbs_up_grounded"),
            "--scores".into(),
            scores.display().to_string(),
            "--config".into(),
            format!("qa-sample-rate={rate}"),
        ]
    };
    let out = |rate| {
        let a = args(rate);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)
    };
    let (ok, stdout, stderr) = out("0");
    assert!(ok, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).expect("json")["action"],
        "accept"
    );
    let (ok, stdout, _) = out("1");
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).expect("json")["queue"],
        "qa"
    );
}

#[test]
fn plugin_run_takes_inline_json_as_its_help_says() {
    let (ok, stdout, stderr) = run(&[
        "plugin",
        "run",
        plugins::HITL_ROUTER.wasm,
        "--manifest",
        plugins::HITL_ROUTER.manifest,
        "--event",
        r#"{"input": "q", "output": "Call me at 555-0100", "feedback": {"type": "thumbs", "value": "up"}}"#,
        "--scores",
        r#"[{"name": "sensitive", "value": 0.9, "label": "pii", "reason": "a phone number"}]"#,
    ]);
    assert!(ok, "{stderr}");
    let route: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        (route["action"].as_str(), route["queue"].as_str()),
        (Some("review"), Some("compliance")),
        "{route}"
    );
    // Without scores the router still runs, and says what it was given.
    let (ok, _, stderr) = run(&[
        "plugin",
        "run",
        plugins::HITL_ROUTER.wasm,
        "--manifest",
        plugins::HITL_ROUTER.manifest,
        "--event",
        &fixture("event_pii_email_card"),
    ]);
    assert!(ok && stderr.contains("no --scores given"), "{stderr}");
}

#[test]
fn plugin_run_reports_a_hostile_plugin_with_its_class() {
    let (ok, _, stderr) = run(&[
        "plugin",
        "run",
        plugins::HOSTILE_LOOP.wasm,
        "--manifest",
        plugins::HOSTILE_LOOP.manifest,
        "--event",
        &fixture("event_no_feedback"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("failed (timeout)"), "{stderr}");
}

#[test]
fn plugin_check_validates_world_and_start_up() {
    let (ok, stdout, stderr) = run(&[
        "plugin",
        "check",
        plugins::GROUNDEDNESS.wasm,
        "--manifest",
        plugins::GROUNDEDNESS.manifest,
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("ok: groundedness is a valid scorer for flywheel:policy@0.2.0"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(&[
        "plugin",
        "check",
        plugins::COMPAT_SCORER.wasm,
        "--manifest",
        plugins::COMPAT_SCORER.manifest,
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("flywheel:policy@0.1.0"),
        "older contract named: {stdout}"
    );
    // Without a manifest the kind is detected from the exports.
    let dir = tempfile::tempdir().expect("tmp");
    let lone = dir.path().join("lonely_router.wasm");
    std::fs::copy(plugins::HITL_ROUTER.wasm, &lone).expect("copy");
    let (ok, stdout, stderr) = run(&["plugin", "check", lone.to_str().expect("path")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("valid router"), "{stdout}");
    assert!(
        stderr.contains("no manifest found"),
        "the defaults are announced: {stderr}"
    );
    // A component just built, in the project's `target/`, runs with its crate's manifest.
    let (ok, _, stderr) = run(&["plugin", "check", plugins::GROUNDEDNESS.wasm]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("note: manifest") && stderr.contains("groundedness/plugin.toml"),
        "{stderr}"
    );
    // A router claimed as a scorer is refused by name.
    let manifest = dir.path().join("claims-scorer.toml");
    std::fs::write(
        &manifest,
        "name = \"claims-scorer\"\nkind = \"scorer\"\nversion = \"1\"\n",
    )
    .expect("write");
    let (ok, _, stderr) = run(&[
        "plugin",
        "check",
        lone.to_str().expect("path"),
        "--manifest",
        manifest.to_str().expect("path"),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("missing export `score`") && stderr.contains("looks like a router"),
        "{stderr}"
    );
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").expect("write");
    let (ok, _, stderr) = run(&[
        "plugin",
        "check",
        junk.to_str().expect("path"),
        "--manifest",
        manifest.to_str().expect("path"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("not a WebAssembly component"), "{stderr}");
}
