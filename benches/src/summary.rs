//! The ratio table printed at the end of a bench run: reads back the estimates
//! criterion just wrote (`<target>/criterion/**/new/{benchmark,estimates}.json`),
//! keeping only those written by this process, so a filtered run reports only what
//! it measured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

/// Where criterion writes, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("criterion")
}

/// Time per iteration (ns) of every benchmark measured since `since`, by full id
/// (`group/function/value`).
#[derive(Debug, Default)]
pub struct Results {
    ns: HashMap<String, f64>,
}

impl Results {
    /// Read what criterion wrote at or after `since`.
    pub fn since(since: SystemTime) -> Self {
        let mut ns = HashMap::new();
        let mut stack = vec![criterion_dir()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.filter_map(Result::ok).map(|e| e.path()) {
                if path.is_dir() {
                    stack.push(path);
                } else if path.ends_with("new/benchmark.json")
                    && let Some((id, value)) = read(&path, since)
                {
                    ns.insert(id, value);
                }
            }
        }
        Self { ns }
    }

    /// Nanoseconds per iteration of `id`, if it ran.
    pub fn ns(&self, id: &str) -> Option<f64> {
        self.ns.get(id).copied()
    }

    /// Whether nothing was measured (e.g. `--test` or `--list` runs).
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }
}

fn read(benchmark: &Path, since: SystemTime) -> Option<(String, f64)> {
    let estimates = benchmark.with_file_name("estimates.json");
    let modified = std::fs::metadata(&estimates).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let parse = |p: &Path| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let id = parse(benchmark)?.get("full_id")?.as_str()?.to_string();
    let est = parse(&estimates)?;
    // What criterion prints as "time": the slope when it has one, else the mean.
    let typical = est
        .get("slope")
        .filter(|s| !s.is_null())
        .or_else(|| est.get("mean"))?
        .get("point_estimate")?
        .as_f64()?;
    Some((id, typical))
}

/// Format nanoseconds for people.
pub fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Print a markdown table of `numerator ÷ denominator` for each row whose two
/// benchmarks both ran: `(label, numerator id, denominator id)`.
pub fn print_ratios(title: &str, results: &Results, rows: &[(String, String, String)]) {
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|(label, num, den)| {
            let (n, d) = (results.ns(num)?, results.ns(den)?);
            Some(format!(
                "| {label} | {} | {} | {:.2}× |",
                human(n),
                human(d),
                n / d
            ))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    println!(
        "\n### {title}\n\n| comparison | numerator | denominator | ratio |\n|---|---|---|---|"
    );
    for l in lines {
        println!("{l}");
    }
}

/// Print a markdown table of rates for benchmarks whose iteration is one event:
/// `(label, id)`.
pub fn print_rates(title: &str, results: &Results, rows: &[(String, String)]) {
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|(label, id)| {
            let ns = results.ns(id)?;
            Some(format!("| {label} | {} | {:.0} |", human(ns), 1e9 / ns))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    println!("\n### {title}\n\n| bench | time per event | events/s |\n|---|---|---|");
    for l in lines {
        println!("{l}");
    }
}
