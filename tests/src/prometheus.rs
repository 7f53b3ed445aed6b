//! Reading `GET /metrics` as Prometheus would: the text is parsed by the Prometheus
//! project's own OpenMetrics parser (`prometheus_client` for Python, in the venv named by
//! `HOIST_TEST_PROMETHEUS`), which refuses malformed text. Not here: fetching the metrics or
//! judging their values (the tests).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Parses stdin with the strict OpenMetrics parser and prints every sample as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "kind": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
json.dump(out, sys.stdout)
"#;

/// One sample as the parser read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    pub family: String,
    /// `counter`, `gauge`, `histogram`, `info`...
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The Python of a venv holding `prometheus_client`, from `HOIST_TEST_PROMETHEUS` (the
/// venv or its python); fails the calling test, naming the variable, when it is unset or
/// names nothing (see `need_root` in the crate root for the convention).
#[track_caller]
pub fn need_prometheus_parser() -> PathBuf {
    let Some(path) = std::env::var_os("HOIST_TEST_PROMETHEUS").map(PathBuf::from) else {
        panic!(
            "this test needs the Prometheus parser: set HOIST_TEST_PROMETHEUS to a venv with \
             prometheus_client, as CI does"
        );
    };
    let python = if path.is_dir() {
        path.join("bin/python3")
    } else {
        path
    };
    assert!(
        python.is_file(),
        "this test needs the Prometheus parser: HOIST_TEST_PROMETHEUS names {}, which does \
         not exist",
        python.display()
    );
    python
}

/// Every sample of `text`, or the parser's refusal.
pub fn parse(python: &std::path::Path, text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    child
        .stdin
        .take()
        .context("the parser's stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the OpenMetrics parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the parser's JSON")
}

/// The value of the one sample named `name` whose labels include `labels`.
#[track_caller]
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}
