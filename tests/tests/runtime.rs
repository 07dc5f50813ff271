//! The runtime against the real compiled plugins: every example plugin's output on
//! fixture events, every hostile plugin stopped with the right class of error while
//! the others keep working, world checks, and the precompiled cache.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flywheel_model::{ErrorClass, Event, Feedback, Prompt, Route, Score};
use flywheel_runtime::{
    LoadError, Manifest, MemoryKv, Plugin, PreparedEvent, PreparedScores, Runtime, RuntimeOptions,
};
use flywheel_tests::{Artifact, fixtures, plugins};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let cache = std::env::temp_dir().join("flywheel-tests-cache");
        Runtime::new(RuntimeOptions {
            cache_dir: Some(cache),
            ..RuntimeOptions::default()
        })
        .expect("runtime starts")
    })
}

fn manifest(a: &Artifact) -> Manifest {
    let text = std::fs::read_to_string(a.manifest).expect("read manifest");
    Manifest::from_toml(&text).expect("valid manifest")
}

fn load_with(a: &Artifact, tweak: impl FnOnce(&mut Manifest)) -> Plugin {
    let mut m = manifest(a);
    tweak(&mut m);
    let wasm = std::fs::read(a.wasm).expect("read wasm");
    runtime()
        .load(m, &wasm, Arc::new(MemoryKv::default()))
        .unwrap_or_else(|e| panic!("load {}: {e}", a.name))
}

fn load(a: &Artifact) -> Plugin {
    load_with(a, |_| {})
}

fn score_one(plugin: &Plugin, event: &Event) -> Vec<Score> {
    plugin
        .score(&PreparedEvent::new(event))
        .result
        .unwrap_or_else(|e| panic!("{e}"))
}

fn only(scores: &[Score], name: &str) -> Score {
    let found: Vec<_> = scores.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one `{name}` score in {scores:?}");
    found[0].clone()
}

#[test]
fn every_plugin_loads_with_its_manifest() {
    for a in plugins::EXAMPLES
        .iter()
        .chain(plugins::HOSTILE)
        .chain(plugins::COMPAT)
    {
        let p = load(a);
        assert_eq!(p.id().name, a.name);
        assert_eq!(p.id().hash.len(), 64, "content hash is BLAKE3 hex");
        let contract = if plugins::COMPAT.iter().any(|c| c.name == a.name) {
            "0.1.0"
        } else {
            "0.2.0"
        };
        assert_eq!(p.contract(), contract, "{}", a.name);
        p.warm_up().unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(plugins::EXAMPLES.len(), 5, "five example plugins");
}

/// Plugins built against the archived 0.1.0 contract (the event as one record) still
/// run: every field arrives, the 0.1 imports answer, and their results are checked
/// like any others.
#[test]
fn plugins_built_against_contract_0_1_still_run() {
    let event = fixtures::event("event_thumbs_up_grounded");
    let prepared = PreparedEvent::new(&event);
    let scorer = load(&plugins::COMPAT_SCORER);
    let first = scorer.score(&prepared);
    let scores = first.result.unwrap_or_else(|e| panic!("{e}"));
    let s = only(&scores, "compat");
    assert_eq!(s.label.as_deref(), Some("from-0.1-config"), "config import");
    let reason = s.reason.clone().unwrap_or_default();
    for part in [
        format!("id={}", event.id),
        format!("input={}", event.input.len()),
        format!("context={}", event.context.len()),
        "signal=thumbs".to_string(),
        "calls=1".to_string(),
    ] {
        assert!(reason.contains(&part), "{part} in {reason}");
    }
    assert!(
        first
            .logs
            .iter()
            .any(|l| l.message.contains("compat-scorer saw")),
        "log import: {:?}",
        first.logs
    );
    let again = only(
        &scorer
            .score(&prepared)
            .result
            .unwrap_or_else(|e| panic!("{e}")),
        "compat",
    );
    assert!(
        again.reason.unwrap_or_default().contains("calls=2"),
        "kv import keeps state between calls"
    );

    let router = load(&plugins::COMPAT_ROUTER);
    let route = router
        .route(&prepared, &PreparedScores::new(&scores))
        .result
        .unwrap_or_else(|e| panic!("{e}"));
    match route {
        Route::Label(t) => {
            assert_eq!((t.queue.as_str(), t.priority), ("compat", 7));
            assert!(
                t.reason.contains(&event.id) && t.reason.contains("compat="),
                "{}",
                t.reason
            );
        }
        other => panic!("the 0.1 router labels, got {other:?}"),
    }

    let refiner = load(&plugins::COMPAT_REFINER);
    let prompt = Prompt {
        name: "support-answer".into(),
        version: "3".into(),
        template: "Answer: {{question}}".into(),
    };
    let proposal = refiner
        .refine(&prompt, std::slice::from_ref(&event))
        .result
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a proposal");
    assert_eq!(proposal.evidence, std::slice::from_ref(&event.id));
    assert!(proposal.rationale.contains("support-answer@3"));
}

#[test]
fn satisfaction_maps_every_signal_to_one_score() {
    let p = load(&plugins::SATISFACTION);
    let cases = [
        ("event_thumbs_up_grounded", Some(1.0)),
        ("event_thumbs_down_ungrounded", Some(0.0)),
        ("event_rating_four_of_five", Some(0.75)),
        ("event_correction_too_long", Some(0.0)),
        ("event_clarification", Some(0.25)),
        ("event_no_feedback", None),
    ];
    for (fixture, expected) in cases {
        let scores = score_one(&p, &fixtures::event(fixture));
        match expected {
            Some(v) => {
                let s = only(&scores, "satisfaction");
                assert!((s.value - v).abs() < 1e-9, "{fixture}: {s:?}");
                assert!(s.reason.is_some(), "{fixture}: a reason for people");
            }
            None => assert!(
                scores.is_empty(),
                "{fixture}: no feedback is unknown, not neutral"
            ),
        }
    }
}

#[test]
fn groundedness_penalises_unsupported_numbers_and_names() {
    let p = load(&plugins::GROUNDEDNESS);
    let good = only(
        &score_one(&p, &fixtures::event("event_thumbs_up_grounded")),
        "groundedness",
    );
    let bad = only(
        &score_one(&p, &fixtures::event("event_thumbs_down_ungrounded")),
        "groundedness",
    );
    assert!(good.value >= 0.7, "{good:?}");
    assert!(bad.value < 0.5, "{bad:?}");
    assert!(bad.value < good.value);
    let reason = bad.reason.unwrap_or_default();
    assert!(
        reason.contains("90") || reason.contains("Zenith"),
        "names what is unsupported: {reason}"
    );
    let no_context = score_one(&p, &fixtures::event("event_medical_advice"));
    assert!(
        no_context.is_empty(),
        "cannot judge without context: {no_context:?}"
    );
}

#[test]
fn sensitive_finds_pii_with_luhn_and_regulated_topics() {
    let p = load(&plugins::SENSITIVE);
    let pii = only(
        &score_one(&p, &fixtures::event("event_pii_email_card")),
        "sensitive",
    );
    assert!(pii.value >= 0.9, "{pii:?}");
    let label = pii.label.clone().unwrap_or_default();
    assert!(
        label.contains("pii:email") && label.contains("pii:card"),
        "{label}"
    );
    let reason = pii.reason.clone().unwrap_or_default();
    assert!(
        !reason.contains("4111 1111 1111 1111") && !reason.contains("jane.doe@example.com"),
        "redacted: {reason}"
    );

    let medical = only(
        &score_one(&p, &fixtures::event("event_medical_advice")),
        "sensitive",
    );
    assert!(medical.label.unwrap_or_default().contains("topic:medical"));
    assert!(medical.value >= 0.5 && medical.value < pii.value);

    let clean = only(
        &score_one(&p, &fixtures::event("event_thumbs_up_grounded")),
        "sensitive",
    );
    assert_eq!(clean.value, 0.0, "{clean:?}");

    // A 16-digit number that fails the Luhn check is not a card.
    let mut not_card = fixtures::event("event_no_feedback");
    not_card.output = "Your tracking number is 4111 1111 1111 1112.".into();
    let s = only(&score_one(&p, &not_card), "sensitive");
    assert!(!s.label.unwrap_or_default().contains("pii:card"));
}

/// Scores from the three example scorers, as the pipeline would gather them.
fn all_scores(event: &Event) -> Vec<Score> {
    [
        &plugins::SATISFACTION,
        &plugins::GROUNDEDNESS,
        &plugins::SENSITIVE,
    ]
    .into_iter()
    .flat_map(|a| score_one(&load(a), event))
    .collect()
}

fn route(router: &Plugin, fixture: &str) -> Route {
    let event = fixtures::event(fixture);
    let scores = all_scores(&event);
    router
        .route(&PreparedEvent::new(&event), &PreparedScores::new(&scores))
        .result
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn router_sends_sensitive_to_review_and_weak_answers_to_labeling() {
    let router = load_with(&plugins::HITL_ROUTER, |m| {
        m.config.insert("qa-sample-rate".into(), "0".into());
    });
    match route(&router, "event_pii_email_card") {
        Route::Review(t) => assert_eq!(t.queue, "compliance"),
        other => panic!("pii goes to compliance review, got {other:?}"),
    }
    let ungrounded = match route(&router, "event_thumbs_down_ungrounded") {
        Route::Label(t) => t,
        other => panic!("weak answer goes to labeling, got {other:?}"),
    };
    assert_eq!(ungrounded.queue, "labeling");
    let clarification = match route(&router, "event_clarification") {
        Route::Label(t) => t,
        other => panic!("clarification goes to labeling, got {other:?}"),
    };
    assert!(clarification.priority > 0 && clarification.priority <= 100);
    assert_eq!(route(&router, "event_thumbs_up_grounded"), Route::Accept);

    // With every accepted answer sampled, QA gets it.
    let sample_all = load_with(&plugins::HITL_ROUTER, |m| {
        m.config.insert("qa-sample-rate".into(), "1".into());
    });
    match route(&sample_all, "event_thumbs_up_grounded") {
        Route::Label(t) => assert_eq!(t.queue, "qa"),
        other => panic!("sampled answer goes to qa, got {other:?}"),
    }
}

#[test]
fn refiner_proposes_concision_from_too_long_complaints() {
    let refiner = load(&plugins::PROMPT_REFINER);
    let prompt = Prompt {
        name: "support-answer".into(),
        version: "3".into(),
        template: "You are a helpful support agent. Answer the question: {{question}}".into(),
    };
    let complaints = [
        "Way too long, just tell me yes or no.",
        "Too verbose.",
        "tl;dr please, shorter",
    ];
    let failures: Vec<Event> = complaints
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut e = fixtures::event("event_correction_too_long");
            e.id = format!("long-{i}");
            e.feedback = Feedback::Comment {
                text: (*text).into(),
            };
            e
        })
        .collect();
    let proposal = refiner
        .refine(&prompt, &failures)
        .result
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("three too-long complaints make a proposal");
    assert!(
        proposal.template.starts_with(&prompt.template),
        "keeps the template: {}",
        proposal.template
    );
    assert!(
        proposal.template.to_lowercase().contains("concise"),
        "{}",
        proposal.template
    );
    let mut evidence = proposal.evidence.clone();
    evidence.sort();
    assert_eq!(evidence, ["long-0", "long-1", "long-2"]);

    let none = refiner
        .refine(&prompt, &failures[..1])
        .result
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(none, None, "one complaint is not a pattern");
}

/// Each hostile plugin fails with its class, the instance is replaced, and a
/// well-behaved plugin loaded beside it keeps working.
#[test]
fn hostile_plugins_are_stopped_and_classified() {
    let good = load(&plugins::SATISFACTION);
    let event = fixtures::event("event_thumbs_up_grounded");
    let prepared = PreparedEvent::new(&event);
    let cases: [(&Artifact, ErrorClass, &str); 7] = [
        (&plugins::HOSTILE_LOOP, ErrorClass::Timeout, "deadline"),
        (
            &plugins::HOSTILE_MEMORY,
            ErrorClass::OutOfMemory,
            "memory cap",
        ),
        (&plugins::HOSTILE_PANIC, ErrorClass::Trap, ""),
        (&plugins::HOSTILE_STACK, ErrorClass::Trap, "stack overflow"),
        (
            &plugins::HOSTILE_HUGE_RESULT,
            ErrorClass::InvalidResult,
            "over the cap",
        ),
        (&plugins::HOSTILE_FILE, ErrorClass::PluginError, ""),
        (&plugins::HOSTILE_ERROR, ErrorClass::PluginError, "refuses"),
    ];
    assert_eq!(
        cases.len(),
        plugins::HOSTILE.len(),
        "every hostile plugin has a case"
    );
    for (artifact, class, needle) in cases {
        let hostile = load(artifact);
        let timeout = hostile.manifest().limits.timeout();
        for attempt in 0..2 {
            let outcome = hostile.score(&prepared);
            let failure = outcome.result.expect_err(artifact.name);
            assert_eq!(failure.class, class, "{}: {failure}", artifact.name);
            assert!(
                failure.message.contains(needle),
                "{}: {failure}",
                artifact.name
            );
            assert_eq!(failure.plugin.name, artifact.name);
            // Stopped, not left running: generous bound, this is not a timing test.
            assert!(
                outcome.duration < timeout * 20 + Duration::from_secs(2),
                "{}: {:?}",
                artifact.name,
                outcome.duration
            );
            let fine = good
                .score(&prepared)
                .result
                .unwrap_or_else(|e| panic!("after {} #{attempt}: {e}", artifact.name));
            assert_eq!(only(&fine, "satisfaction").value, 1.0);
        }
    }
}

/// The epoch ticker sleeps when no call has run for a while; the next call must wake it,
/// or a looping plugin would never be stopped.
#[test]
fn a_deadline_fires_after_the_runtime_sat_idle() {
    let hostile = load(&plugins::HOSTILE_LOOP);
    let prepared = PreparedEvent::new(&fixtures::event("event_thumbs_up_grounded"));
    for _ in 0..2 {
        // Well past the ticker's 100 ms of idleness before it parks.
        std::thread::sleep(Duration::from_millis(400));
        let outcome = hostile.score(&prepared);
        let failure = outcome.result.expect_err("the loop is stopped");
        assert_eq!(failure.class, ErrorClass::Timeout, "{failure}");
        assert!(
            outcome.duration < Duration::from_secs(10),
            "{:?}",
            outcome.duration
        );
    }
}

#[test]
fn the_sandbox_grants_no_files_environment_or_clock() {
    let p = load(&plugins::HOSTILE_FILE);
    let outcome = p.score(&PreparedEvent::new(&fixtures::event("event_no_feedback")));
    match outcome.result {
        Ok(scores) => panic!("the sandbox leaked a file: {scores:?}"),
        Err(f) => assert_eq!(f.class, ErrorClass::PluginError, "{f}"),
    }
}

#[test]
fn a_panic_message_reaches_the_error() {
    let p = load(&plugins::HOSTILE_PANIC);
    let failure = p
        .score(&PreparedEvent::new(&fixtures::event("event_no_feedback")))
        .result
        .expect_err("panics");
    assert!(failure.message.contains("deliberate panic"), "{failure}");
}

#[test]
fn plugins_are_called_from_many_threads() {
    let p = Arc::new(load(&plugins::GROUNDEDNESS));
    let event = fixtures::event("event_thumbs_up_grounded");
    let expected = score_one(&p, &event);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let p = p.clone();
            let event = &event;
            let expected = &expected;
            s.spawn(move || {
                let prepared = PreparedEvent::new(event);
                for _ in 0..200 {
                    assert_eq!(&p.score(&prepared).result.expect("scores"), expected);
                }
            });
        }
    });
    let c = p.counters();
    assert_eq!(c.calls.load(std::sync::atomic::Ordering::Relaxed), 801);
    assert!(
        c.instantiations.load(std::sync::atomic::Ordering::Relaxed) <= 5,
        "instances are reused"
    );
}

#[test]
fn a_component_of_the_wrong_world_is_refused_by_name() {
    let mut m = manifest(&plugins::HITL_ROUTER);
    m.kind = flywheel_model::PluginKind::Scorer;
    let wasm = std::fs::read(plugins::HITL_ROUTER.wasm).expect("read");
    let err = runtime()
        .load(m, &wasm, Arc::new(MemoryKv::default()))
        .expect_err("a router is not a scorer");
    let msg = err.to_string();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{msg}");
    assert!(msg.contains("`score`") && msg.contains("router"), "{msg}");
    assert_eq!(
        runtime().detect_kind(&wasm).expect("detects"),
        flywheel_model::PluginKind::Router
    );
}

#[test]
fn a_component_built_against_an_unknown_contract_is_refused_by_name() {
    // The 0.1 fixture with its contract's version rewritten in place: as if built
    // against a `flywheel:policy` newer than this host.
    let mut wasm = std::fs::read(plugins::COMPAT_SCORER.wasm).expect("read");
    let (from, to) = (b"flywheel:policy/", b"@0.1.0");
    let mut patched = 0;
    let mut i = 0;
    while let Some(at) = wasm[i..].windows(from.len()).position(|w| w == from) {
        let start = i + at + from.len();
        if let Some(v) = wasm[start..]
            .windows(to.len())
            .take(16)
            .position(|w| w == to)
        {
            wasm[start + v..start + v + to.len()].copy_from_slice(b"@9.1.0");
            patched += 1;
        }
        i = start;
    }
    assert!(patched > 0, "the fixture names its contract");
    let err = runtime()
        .load(
            manifest(&plugins::COMPAT_SCORER),
            &wasm,
            Arc::new(MemoryKv::default()),
        )
        .expect_err("an unknown contract");
    let msg = err.to_string();
    assert!(
        msg.contains("flywheel:policy@9.1.0") && msg.contains("0.1.0 and 0.2.0"),
        "{msg}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let m = manifest(&plugins::SATISFACTION);
    let kv = || -> Arc<MemoryKv> { Arc::new(MemoryKv::default()) };
    let junk = runtime()
        .load(m.clone(), b"definitely not wasm", kv())
        .expect_err("junk");
    assert!(matches!(junk, LoadError::NotAComponent(_)), "{junk}");
    let core = runtime()
        .load(m, b"\0asm\x01\0\0\0", kv())
        .expect_err("core module");
    assert!(core.to_string().contains("core wasm module"), "{core}");
}

#[test]
fn compiled_components_are_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeOptions::default()
    };
    let first = Runtime::new(options()).expect("runtime");
    let p = first
        .load_files(
            plugins::SATISFACTION.wasm.as_ref(),
            plugins::SATISFACTION.manifest.as_ref(),
            Arc::new(MemoryKv::default()),
        )
        .expect("load");
    let entries = || std::fs::read_dir(dir.path()).expect("read cache").count();
    assert_eq!(entries(), 1, "one precompiled artifact");
    let name = std::fs::read_dir(dir.path())
        .expect("read")
        .next()
        .expect("entry")
        .expect("entry")
        .file_name();
    assert!(
        name.to_string_lossy().starts_with(p.component_hash()),
        "keyed by content hash: {name:?}"
    );

    let second = Runtime::new(options()).expect("runtime");
    let p2 = second
        .load_files(
            plugins::SATISFACTION.wasm.as_ref(),
            plugins::SATISFACTION.manifest.as_ref(),
            Arc::new(MemoryKv::default()),
        )
        .expect("load from cache");
    assert_eq!(entries(), 1, "no second compile");
    let scores = score_one(&p2, &fixtures::event("event_thumbs_up_grounded"));
    assert_eq!(only(&scores, "satisfaction").value, 1.0);
}

#[test]
fn a_fresh_instance_per_call_gives_the_same_answers() {
    let rt = Runtime::new(RuntimeOptions {
        fresh_instance_per_call: true,
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    let p = rt
        .load_files(
            plugins::SENSITIVE.wasm.as_ref(),
            plugins::SENSITIVE.manifest.as_ref(),
            Arc::new(MemoryKv::default()),
        )
        .expect("load");
    let event = fixtures::event("event_pii_email_card");
    let a = score_one(&p, &event);
    let b = score_one(&p, &event);
    assert_eq!(a, b);
    assert_eq!(
        p.counters()
            .instantiations
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
