//! The plugin manifest: what a plugin claims to be and the limits it runs under.
//!
//! Manifests are TOML files beside the `.wasm` (`plugin.toml` in a plugin's source,
//! `<name>.toml` in a plugin directory). Unknown keys are refused so that a typo in a
//! limit fails loudly instead of silently running with the default.

use std::collections::BTreeMap;
use std::time::Duration;

use flywheel_model::{FailureMode, PluginKind};
use serde::{Deserialize, Serialize};

use crate::error::LoadError;

/// A plugin's manifest, as its author wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Unique name: lower-case ASCII letters, digits and `-`.
    pub name: String,
    /// Which WIT world the component implements.
    pub kind: PluginKind,
    /// The author's version string; the content hash is what identifies a build.
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default)]
    pub limits: Limits,
    /// String key/values the plugin reads through the `config` import. A number or a
    /// boolean (`threshold = 0.3`) is taken as its text, as the plugin will read it.
    #[serde(default, deserialize_with = "config_values")]
    pub config: BTreeMap<String, String>,
}

fn config_values<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string, a number or a boolean")]
    enum Value {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Text(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// Per-call limits. Defaults suit a scorer over one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Limits {
    /// Wall-clock deadline for one call, in milliseconds.
    pub timeout_ms: u64,
    /// Cap on the plugin's linear memory, in MiB.
    pub memory_mib: u64,
    /// Cap on the size of what one call returns, in KiB.
    pub max_result_kib: u64,
    /// Cap on the plugin's key-value data (keys plus values), in KiB.
    pub kv_quota_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 100,
            memory_mib: 32,
            max_result_kib: 64,
            kv_quota_kib: 64,
        }
    }
}

/// The most any manifest may ask for: a plugin cannot opt out of the sandbox.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// See [`MAX_TIMEOUT_MS`].
pub const MAX_MEMORY_MIB: u64 = 512;
/// See [`MAX_TIMEOUT_MS`].
pub const MAX_RESULT_KIB: u64 = 16 * 1024;
/// See [`MAX_TIMEOUT_MS`].
pub const MAX_KV_QUOTA_KIB: u64 = 64 * 1024;

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize) << 20
    }

    /// The result cap in bytes.
    pub fn max_result_bytes(&self) -> usize {
        (self.max_result_kib as usize) << 10
    }

    /// The key-value quota in bytes.
    pub fn kv_quota_bytes(&self) -> u64 {
        self.kv_quota_kib << 10
    }
}

impl Manifest {
    /// Parse and validate a manifest from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            // Name the line: serde's message alone does not say which key it is about.
            let at = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let source = text.lines().nth(line - 1).unwrap_or_default().trim();
                format!(" (line {line}: `{source}`)")
            });
            LoadError::Manifest(format!("{}{}", e.message().trim(), at.unwrap_or_default()))
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check the fields that serde cannot: the name's alphabet and the limits' ranges.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |msg: String| Err(LoadError::Manifest(msg));
        if !valid_name(&self.name) {
            return bad(format!(
                "name `{}` must be 1-64 characters of a-z, 0-9 and `-`, starting with a letter",
                self.name
            ));
        }
        if self.version.trim().is_empty() || self.version.len() > 64 {
            return bad("version must be 1-64 characters".into());
        }
        let l = &self.limits;
        for (key, value, max) in [
            ("limits.timeout-ms", l.timeout_ms, MAX_TIMEOUT_MS),
            ("limits.memory-mib", l.memory_mib, MAX_MEMORY_MIB),
            ("limits.max-result-kib", l.max_result_kib, MAX_RESULT_KIB),
            ("limits.kv-quota-kib", l.kv_quota_kib, MAX_KV_QUOTA_KIB),
        ] {
            if value == 0 || value > max {
                return bad(format!("{key} = {value} is out of range 1..={max}"));
            }
        }
        Ok(())
    }
}

/// Plugin names appear in URLs, metrics labels and file names: keep them plain.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::from_toml(
            r#"
            name = "satisfaction"
            kind = "scorer"
            version = "0.1.0"
            failure-mode = "fail-closed"
            [limits]
            timeout-ms = 50
            [config]
            threshold = "0.5"
            "#,
        )
        .expect("valid manifest");
        assert_eq!(m.kind, PluginKind::Scorer);
        assert_eq!(m.failure_mode, FailureMode::FailClosed);
        assert_eq!(m.limits.timeout_ms, 50);
        assert_eq!(m.limits.memory_mib, 32);
        assert_eq!(m.config["threshold"], "0.5");
    }

    #[test]
    fn refuses_typos_and_bad_limits() {
        let typo =
            Manifest::from_toml("name='a'\nkind='scorer'\nversion='1'\n[limits]\ntimeout=5\n")
                .expect_err("unknown key");
        assert!(typo.to_string().contains("timeout"), "{typo}");
        let kind = Manifest::from_toml("name='a'\nkind='grader'\nversion='1'\n").expect_err("kind");
        assert!(kind.to_string().contains("grader"), "{kind}");
        let big = Manifest::from_toml(
            "name='a'\nkind='scorer'\nversion='1'\n[limits]\nmemory-mib=99999\n",
        )
        .expect_err("limit");
        assert!(big.to_string().contains("memory-mib"), "{big}");
        let name =
            Manifest::from_toml("name='A b'\nkind='scorer'\nversion='1'\n").expect_err("name");
        assert!(name.to_string().contains("name"), "{name}");
        // A wrong type names its line, so the key.
        let typed = Manifest::from_toml(
            "name='a'\nkind='scorer'\nversion='1'\n[limits]\ntimeout-ms='fast'\n",
        )
        .expect_err("type");
        assert!(
            typed.to_string().contains("line 5: `timeout-ms='fast'`"),
            "{typed}"
        );
    }

    #[test]
    fn config_values_may_be_numbers_or_booleans() {
        let m = Manifest::from_toml(
            "name='a'\nkind='scorer'\nversion='1'\n[config]\nthreshold=0.3\nmax=5\non=true\nq='x'\n",
        )
        .expect("valid");
        let got: Vec<(&str, &str)> = m
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("max", "5"),
                ("on", "true"),
                ("q", "x"),
                ("threshold", "0.3")
            ]
        );
        let nested =
            Manifest::from_toml("name='a'\nkind='scorer'\nversion='1'\n[config]\nlist=[1, 2]\n")
                .expect_err("an array is not a value");
        assert!(
            nested
                .to_string()
                .contains("a string, a number or a boolean"),
            "{nested}"
        );
    }
}
