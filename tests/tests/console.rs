//! The review console in a real browser: Debian's headless Chromium, driven over
//! WebDriver by chromedriver, against the real server with a day of history seeded into
//! its store. A reviewer signs in, claims an item, writes a correction and approves it;
//! the API then shows the item done and the correction on the event. Screenshots of the
//! queue list, the review screen and the dashboard go to `target/test-artifacts/`.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use flywheel_model::{Event, Feedback, Outcome, PromptRef, Review, Thumb, Verdict, now_ms};
use flywheel_store::{Store, StoreOptions};
use flywheel_tests::fixtures;
use flywheel_tests::server::{Options, Server, examples_without_sampling};
use serde_json::{Value, json};

const REVIEWER: &str = "reviewer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789abc";
const HOUR: u64 = 3_600_000;
const CORRECTION: &str =
    "Laptops can be returned within 30 days of delivery, in their original packaging.";

/// `chromedriver` on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bin = std::env::var("FLYWHEEL_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {bin} ({e}); install Debian's chromium and chromium-driver")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// A day of traffic for three prompt versions, some of it reviewed on `labeling`, written
/// straight into the store (the API stamps events with the current time).
fn seed_history(data_dir: &Path) {
    let store = Store::open(&data_dir.join("store"), StoreOptions::default()).expect("open store");
    let now = now_ms();
    let prompts = [
        ("support-answer", "3", 0.45),
        ("support-answer", "4", 0.8),
        ("wellness-chat", "1", 0.65),
    ];
    let mut labeled = Vec::new();
    for hour in 1..22u64 {
        for (p, (name, version, base)) in prompts.iter().enumerate() {
            let count = 2 + (hour * 7 + p as u64 * 3) % 6;
            for n in 0..count {
                let id = format!("seed-{name}-{version}-{hour}-{n}");
                let at = now - hour * HOUR + n * 1000;
                let wobble = ((hour * 13 + n * 5) % 9) as f64 / 20.0 - 0.2;
                let satisfaction = (base + wobble).clamp(0.0, 1.0);
                let event = Event {
                    id: id.clone(),
                    received_at: at,
                    trace_id: None,
                    session_id: None,
                    user_id: None,
                    model: Some("gpt-4o-mini".into()),
                    prompt: Some(PromptRef {
                        name: (*name).into(),
                        version: (*version).into(),
                    }),
                    input: "How do I reset my password?".into(),
                    output: "Use 'Forgot password' on the sign-in page.".into(),
                    context: vec![],
                    feedback: Feedback::Thumbs {
                        value: if satisfaction >= 0.5 {
                            Thumb::Up
                        } else {
                            Thumb::Down
                        },
                    },
                    metadata: BTreeMap::new(),
                };
                store.append(vec![event]).expect("append");
                let route = if satisfaction < 0.4 {
                    json!({"action": "label", "queue": "labeling", "priority": 50, "reason": "unhappy user"})
                } else {
                    json!({"action": "accept"})
                };
                let outcome: Outcome = serde_json::from_value(json!({
                    "scores": [{"plugin": "satisfaction", "name": "satisfaction", "value": satisfaction}],
                    "votes": [], "calls": [], "plugins": [], "processed_at": at, "route": route,
                }))
                .expect("outcome");
                if let flywheel_store::Completion::Completed {
                    queue_item: Some(item),
                } = store.complete(&id, &outcome).expect("complete")
                {
                    labeled.push((item.id, at));
                }
            }
        }
    }
    for (i, (item, at)) in labeled.into_iter().enumerate() {
        let reviewer = ["alice", "bob", "carol"][i % 3];
        let reviewed_at = at + 20 * 60_000;
        store
            .claim("labeling", reviewer, 600_000, &[], reviewed_at - 60_000)
            .expect("claim")
            .expect("an item");
        let review = Review {
            queue: "labeling".into(),
            item_id: item.clone(),
            reviewer: reviewer.into(),
            verdict: if i % 4 == 0 {
                Verdict::Approve
            } else {
                Verdict::Reject
            },
            rating: None,
            tags: vec![],
            corrected_output: None,
            note: None,
            reviewed_at,
        };
        store.review(review, 1).expect("review");
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("FLYWHEEL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1440,1200", "--lang=en-GB",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session from chromedriver")
}

async fn text_of(client: &Client, css: &str) -> String {
    let el = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await;
    el.unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join(name), png).expect("write screenshot");
}

#[test]
fn a_reviewer_signs_in_corrects_and_approves_in_the_browser() {
    let data = tempfile::tempdir().expect("tempdir");
    seed_history(data.path());
    let config = format!(
        "[[tokens]]\nname = \"rita\"\nrole = \"reviewer\"\ntoken = \"{REVIEWER}\"\n\
         [[tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n\
         [[queues]]\nname = \"labeling\"\ndescription = \"Answers the policies could not vouch for.\"\n\
         instructions = \"Approve if the answer is grounded in the context; otherwise write the answer it should have given.\"\n"
    );
    let server = Server::start(Options {
        plugins: examples_without_sampling(),
        config,
        data_dir: Some(data.path().to_path_buf()),
    })
    .with_token(ADMIN);
    let (status, body) = server.post(
        "/v1/events?wait=true",
        &fixtures::json("event_thumbs_down_ungrounded"),
    );
    assert_eq!(
        (status, body["outcome"]["route"]["queue"].as_str()),
        (200, Some("labeling")),
        "{body}"
    );
    let (status, body) = server.post(
        "/v1/events?wait=true",
        &fixtures::json("event_pii_email_card"),
    );
    assert_eq!(status, 200, "{body}");

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let item = runtime.block_on(async {
        let client = browser(&driver, profile.path()).await;
        client
            .goto(&format!("{}/ui/", server.base))
            .await
            .expect("open the console");

        // Sign in with the reviewer token.
        let token = client
            .wait()
            .for_element(Locator::Id("token"))
            .await
            .expect("sign-in form");
        token.send_keys(REVIEWER).await.expect("type token");
        client
            .find(Locator::Id("sign-in"))
            .await
            .expect("button")
            .click()
            .await
            .expect("sign in");
        assert_eq!(text_of(&client, "#who-name").await, "rita");

        // The queue list shows the depths; open labeling.
        let card = text_of(&client, "a[data-queue='labeling']").await;
        assert_eq!(card, "labeling");
        save_screenshot(&client, "console-queues.png").await;
        client
            .find(Locator::Css("a[data-queue='labeling']"))
            .await
            .expect("link")
            .click()
            .await
            .expect("open queue");

        // The review screen shows the evidence for the claimed item.
        let item_el = client
            .wait()
            .for_element(Locator::Css("#item-id[data-item]"))
            .await
            .expect("a claimed item");
        let item = item_el
            .attr("data-item")
            .await
            .expect("attr")
            .expect("item id");
        assert!(
            text_of(&client, "[data-field='output']")
                .await
                .contains("Platinum Warranty")
        );
        assert!(
            text_of(&client, "[data-field='context']")
                .await
                .contains("30 days")
        );
        assert!(
            text_of(&client, "[data-field='scores']")
                .await
                .contains("groundedness")
        );
        assert!(
            !text_of(&client, "[data-field='reason']").await.is_empty(),
            "why it was routed"
        );

        // Write a correction, rate it with a keyboard shortcut, tag it, and approve.
        let editor = client
            .find(Locator::Id("correction"))
            .await
            .expect("editor");
        editor.send_keys(CORRECTION).await.expect("type correction");
        client
            .find(Locator::Id("tags"))
            .await
            .expect("tags")
            .send_keys("hallucination")
            .await
            .expect("tags");
        client
            .find(Locator::Css("h2#decision-title"))
            .await
            .expect("title")
            .click()
            .await
            .expect("leave the field");
        client
            .execute("document.activeElement.blur()", vec![])
            .await
            .expect("blur");
        client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .send_keys("4")
            .await
            .expect("rating key");
        let checked: Value = client
            .execute("return document.querySelector('#rating-4').checked", vec![])
            .await
            .expect("rating state");
        assert_eq!(checked, json!(true), "the 4 key rates 4");
        save_screenshot(&client, "console-review.png").await;
        client
            .find(Locator::Id("approve"))
            .await
            .expect("approve")
            .click()
            .await
            .expect("approve");
        let done = text_of(&client, ".empty-queue h2").await;
        assert_eq!(done, "Nothing left for you here");

        // The dashboard draws the seeded day (a taller window, to see all of it).
        client.set_window_size(1440, 1800).await.expect("resize");
        client
            .goto(&format!("{}/ui/#/dashboard", server.base))
            .await
            .expect("dashboard");
        client
            .wait()
            .for_element(Locator::Css("svg.chart rect.vol"))
            .await
            .expect("a chart");
        let charts = client
            .find_all(Locator::Css("svg.chart"))
            .await
            .expect("charts");
        assert!(
            charts.len() >= 4,
            "three prompt versions and one queue: {}",
            charts.len()
        );
        save_screenshot(&client, "console-dashboard.png").await;
        client.close().await.expect("close the browser");
        item
    });

    // Through the API: the item is done, by rita, and the event carries her correction.
    let (status, body) = server.get(&format!("/v1/queues/labeling/items/{item}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["item"]["status"], "done", "{body}");
    let review = &body["item"]["reviews"][0];
    assert_eq!(
        (review["reviewer"].as_str(), review["verdict"].as_str()),
        (Some("rita"), Some("approve"))
    );
    assert_eq!(
        (review["rating"].as_u64(), review["tags"][0].as_str()),
        (Some(4), Some("hallucination"))
    );
    let event = server.wait_processed("thumbs-down-ungrounded");
    assert_eq!(
        event["correction"],
        json!({"text": CORRECTION, "source": "review", "reviewer": "rita"})
    );
}

#[test]
fn the_console_is_served_from_the_binary() {
    let server = Server::start(Options::default());
    let (status, html) = server.get_text("/ui/");
    assert_eq!(status, 200);
    assert!(html.contains("<script src=\"app.js\""), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    for (path, kind) in [
        ("/ui/app.js", "javascript"),
        ("/ui/app.css", "css"),
        ("/ui/", "html"),
    ] {
        let resp = server.client.get(server.url(path)).send().expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(
            header("content-type").contains(kind),
            "{path}: {}",
            header("content-type")
        );
        assert!(
            header("content-security-policy").contains("default-src 'self'"),
            "{path}"
        );
    }
    let resp = server
        .client
        .get(server.url("/ui/nope.js"))
        .send()
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 404);
    let redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(server.url("/ui"))
        .send()
        .expect("GET");
    assert_eq!(
        redirect
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/ui/")
    );
}
