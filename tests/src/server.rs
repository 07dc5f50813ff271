//! A real `flywheel serve` process for tests: its own temp data dir, an ephemeral
//! port on loopback, a plugin directory staged from the compiled plugins, and a
//! blocking HTTP client. Dropping it kills the process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Artifact;

/// The `flywheel` binary: `$FLYWHEEL_BIN` (set by `cargo xtask test`), else built now.
pub fn flywheel_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("FLYWHEEL_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--package",
                "flywheel",
                "--bin",
                "flywheel",
            ])
            .status()
            .expect("run cargo build for the flywheel binary");
        assert!(status.success(), "building the flywheel binary failed");
        root.join("target").join("debug").join("flywheel")
    })
    .clone()
}

/// A plugin to stage, with manifest edits (`key = value` lines appended per table).
#[derive(Debug, Clone)]
pub struct StagedPlugin {
    pub artifact: Artifact,
    /// Replaces the manifest's `failure-mode`.
    pub failure_mode: Option<&'static str>,
    /// Added to (or replacing) the manifest's `[config]`.
    pub config: Vec<(&'static str, String)>,
}

impl From<Artifact> for StagedPlugin {
    fn from(artifact: Artifact) -> Self {
        Self {
            artifact,
            failure_mode: None,
            config: Vec::new(),
        }
    }
}

impl StagedPlugin {
    pub fn fail_closed(mut self) -> Self {
        self.failure_mode = Some("fail-closed");
        self
    }

    pub fn config(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.config.push((key, value.into()));
        self
    }
}

/// Copy plugins into `dir` as `<name>.wasm` + `<name>.toml`, the layout `--plugins` reads.
pub fn stage(dir: &Path, plugins: &[StagedPlugin]) {
    std::fs::create_dir_all(dir).expect("create plugin dir");
    for p in plugins {
        let name = p.artifact.name;
        std::fs::copy(p.artifact.wasm, dir.join(format!("{name}.wasm"))).expect("copy wasm");
        let text = std::fs::read_to_string(p.artifact.manifest).expect("read manifest");
        let mut out = String::new();
        let mut in_config = false;
        for line in text.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            if line.trim_start().starts_with('[') {
                in_config = line.trim() == "[config]";
            }
            if key == "failure-mode" && p.failure_mode.is_some() {
                continue;
            }
            if in_config && p.config.iter().any(|(k, _)| *k == key) {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line.trim() == "[config]" {
                for (k, v) in &p.config {
                    out.push_str(&format!("{k} = {v:?}\n"));
                }
            }
        }
        if !text.lines().any(|l| l.trim() == "[config]") && !p.config.is_empty() {
            out.push_str("[config]\n");
            for (k, v) in &p.config {
                out.push_str(&format!("{k} = {v:?}\n"));
            }
        }
        if let Some(mode) = p.failure_mode {
            // Top-level keys must come before the first table.
            let at = out.find("\n[").map_or(out.len(), |i| i + 1);
            out.insert_str(at, &format!("failure-mode = {mode:?}\n"));
        }
        std::fs::write(dir.join(format!("{name}.toml")), out).expect("write manifest");
    }
}

/// A token for each role, for tests of who may do what.
pub mod tokens {
    pub const INGEST: &str = "ingest-token-0123456789ab";
    pub const REVIEWER: &str = "reviewer-token-0123456789";
    pub const ADMIN: &str = "admin-token-0123456789abc";

    /// Config that declares them, named `app` (ingest), `rita` (reviewer) and `ops` (admin).
    pub fn config() -> String {
        format!(
            "[[tokens]]\nname = \"app\"\nrole = \"ingest\"\ntoken = \"{INGEST}\"\n\
             [[tokens]]\nname = \"rita\"\nrole = \"reviewer\"\ntoken = \"{REVIEWER}\"\n\
             [[tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
        )
    }
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    pub plugins: Vec<StagedPlugin>,
    /// Extra TOML for the config file.
    pub config: String,
    /// Reuse this data dir (for restarts); default: a fresh temp dir.
    pub data_dir: Option<PathBuf>,
}

impl Options {
    /// The five examples (QA sampling off) on this data directory, to restart on it.
    pub fn examples_in(data_dir: impl Into<PathBuf>) -> Self {
        Options {
            plugins: examples_without_sampling(),
            data_dir: Some(data_dir.into()),
            ..Options::default()
        }
    }
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub client: reqwest::blocking::Client,
    pub token: Option<String>,
}

impl Server {
    /// Start with the five example plugins (QA sampling off, so routes are exact).
    pub fn with_examples() -> Self {
        Self::with_examples_and("")
    }

    /// [`Server::with_examples`], with this extra config.
    pub fn with_examples_and(config: &str) -> Self {
        Self::start(Options {
            plugins: examples_without_sampling(),
            config: config.into(),
            ..Options::default()
        })
    }

    pub fn start(options: Options) -> Self {
        let (temp, data_dir) = match options.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let plugin_dir = data_dir.join("plugins-under-test");
        let _ = std::fs::remove_dir_all(&plugin_dir);
        stage(&plugin_dir, &options.plugins);
        let config_path = data_dir.join("config.toml");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"127.0.0.1:0\"\nworkers = 2\n{}\n",
                options.config
            ),
        )
        .expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .expect("open log");
        let mut child = Command::new(flywheel_bin())
            .args(["serve", "--config"])
            .arg(&config_path)
            .arg("--data")
            .arg(&data_dir)
            .arg("--plugins")
            .arg(&plugin_dir)
            .env("RUST_LOG", "info,tower_http=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start flywheel");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("flywheel listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                panic!("server did not start; log:\n{log}");
            }
        };
        Self {
            child: Some(child),
            base,
            data_dir,
            _temp: temp,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            token: None,
        }
    }

    /// Use this bearer token for the requests that follow.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(
        &self,
        req: reqwest::blocking::RequestBuilder,
        token: Option<&str>,
    ) -> reqwest::blocking::RequestBuilder {
        match token.or(self.token.as_deref()) {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POST JSON; returns status and parsed body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(path, body, None)
    }

    pub fn post_as(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let resp = self
            .auth(self.client.post(self.url(path)).json(body), token)
            .send()
            .expect("POST");
        split(resp)
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> (u16, Value) {
        let resp = self
            .auth(
                self.client
                    .post(self.url(path))
                    .header("content-type", content_type)
                    .body(body),
                None,
            )
            .send()
            .expect("POST");
        split(resp)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(path, None)
    }

    pub fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let resp = self
            .auth(self.client.get(self.url(path)), token)
            .send()
            .expect("GET");
        split(resp)
    }

    /// DELETE; returns status and parsed body.
    pub fn delete_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let resp = self
            .auth(self.client.delete(self.url(path)), token)
            .send()
            .expect("DELETE");
        split(resp)
    }

    /// GET with this token (else the server's), the response as it came: for bodies
    /// that are not JSON and for headers.
    pub fn get_response(&self, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
        self.auth(self.client.get(self.url(path)), token)
            .send()
            .expect("GET")
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .auth(self.client.get(self.url(path)), None)
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Wait until the event has been processed and return its record.
    pub fn wait_processed(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(&format!("/v1/events/{id}"));
            if status == 200 && body["status"] == "processed" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "event {id} not processed in time: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the process, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn split(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The five examples, with the router's QA sampling off so routes are exact.
pub fn examples_without_sampling() -> Vec<StagedPlugin> {
    crate::plugins::EXAMPLES
        .iter()
        .map(|a| {
            let p = StagedPlugin::from(*a);
            if a.name == "hitl-router" {
                p.config("qa-sample-rate", "0")
            } else {
                p
            }
        })
        .collect()
}
