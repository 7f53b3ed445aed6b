//! Results: summary statistics of repeated samples, one measurement per figure with its
//! baseline and ratio, the printed table and the JSON document.
//!
//! This module only shapes and prints numbers; it measures nothing and judges nothing beyond
//! comparing a figure with its stated target and checking that each figure is well formed
//! ([`problems`]: what `.ci/run` relies on when it runs `hoist-bench all --quick`).

use std::path::Path;

use serde::Serialize;

/// Median, minimum, maximum (and percentiles when there are many samples) of one series.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p99: f64,
}

impl Stat {
    /// `None` for an empty series.
    pub fn of(samples: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stat {
            n: v.len(),
            median: percentile(&v, 0.5),
            min: v[0],
            max: v[v.len() - 1],
            p99: percentile(&v, 0.99),
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// One figure: what was measured, its statistics, the baseline it is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Stable identifier, e.g. `apply.tar_gz.seconds`.
    pub name: String,
    pub unit: String,
    pub stat: Stat,
    /// What the baseline is, e.g. `sha256sum + tar -xzf + cp -a`.
    pub baseline_name: Option<String>,
    pub baseline: Option<Stat>,
    /// This figure divided by the baseline (per run pair when runs alternate), as statistics.
    pub ratio: Option<Stat>,
    /// The target in words, e.g. `ratio <= 1.3`.
    pub target: Option<String>,
    /// Whether the target was met; `None` when there is no target.
    pub met: Option<bool>,
    /// How it was measured, and any caveat.
    pub note: String,
}

impl Measurement {
    pub fn new(name: &str, unit: &str, stat: Stat, note: impl Into<String>) -> Measurement {
        Measurement {
            name: name.to_string(),
            unit: unit.to_string(),
            stat,
            baseline_name: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: note.into(),
        }
    }

    pub fn baseline(mut self, name: &str, baseline: Stat, ratio: Option<Stat>) -> Measurement {
        let ratio = ratio.or_else(|| {
            (baseline.median > 0.0).then(|| Stat {
                n: 1,
                median: self.stat.median / baseline.median,
                min: self.stat.median / baseline.median,
                max: self.stat.median / baseline.median,
                p99: self.stat.median / baseline.median,
            })
        });
        self.baseline_name = Some(name.to_string());
        self.baseline = Some(baseline);
        self.ratio = ratio;
        self
    }

    pub fn target(mut self, words: &str, met: bool) -> Measurement {
        self.target = Some(words.to_string());
        self.met = Some(met);
        self
    }
}

/// Everything one invocation measured, with where it ran.
#[derive(Debug, Serialize)]
pub struct Document {
    pub tool: String,
    pub quick: bool,
    pub started_utc: String,
    pub machine: Machine,
    pub measurements: Vec<Measurement>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average_at_start: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpus,
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease"),
            load_average_at_start: read("/proc/loadavg"),
        }
    }
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

/// The table: one line per measurement.
pub fn table(measurements: &[Measurement]) -> String {
    let header = [
        "measurement",
        "unit",
        "median",
        "min",
        "max",
        "p99",
        "baseline median",
        "ratio median [min-max]",
        "target",
        "met",
    ];
    let rows: Vec<[String; 10]> = measurements
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.unit.clone(),
                num(m.stat.median),
                num(m.stat.min),
                num(m.stat.max),
                if m.stat.n > 2 {
                    num(m.stat.p99)
                } else {
                    "-".into()
                },
                m.baseline.as_ref().map_or("-".into(), |b| num(b.median)),
                m.ratio.as_ref().map_or("-".into(), |r| {
                    format!("{} [{}-{}]", num(r.median), num(r.min), num(r.max))
                }),
                m.target.clone().unwrap_or_else(|| "-".into()),
                match m.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(widths.iter()) {
            s.push_str(&format!(" {c:<w$} |"));
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    out.push_str(&line(widths.iter().map(|_| "---").collect()).replace(' ', "-"));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn write_json(path: &Path, doc: &Document) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The measurements `hoist-bench all --quick` makes, in order; `postgres` when the
/// coordinator was measured on PostgreSQL too.
pub fn quick_all_measurements(postgres: bool) -> Vec<String> {
    let mut out: Vec<String> = [
        "apply.tar_gz.seconds",
        "apply.tar_gz.seconds_vs_durable_floor",
        "apply.tar_gz.mb_per_s",
        "apply.tar_gz.peak_rss_mib",
        "apply.zip.seconds",
        "apply.zip.seconds_vs_durable_floor",
        "apply.zip.mb_per_s",
        "apply.zip.peak_rss_mib",
        "apply.web_app.seconds",
        "apply.web_app.busy_seconds",
        "apply.web_app.syncs",
        "rollback.switch_seconds",
        "rollback.command_seconds",
        "pickup.agents_1.seconds",
        "pickup.agents_5.seconds",
        "footprint.idle_rss_mib",
        "footprint.idle_cpu_percent",
        "footprint.rss_after_deployments_mib",
    ]
    .map(String::from)
    .to_vec();
    const FLEETS: [usize; 2] = [20, 100];
    for n in FLEETS {
        for m in [
            "pickup_seconds",
            "all_assigned_seconds",
            "server_cpu_percent",
            "server_rss_mib",
            "reports_per_second",
        ] {
            out.push(format!("coordinator.hosts_{n}.{m}"));
        }
    }
    if postgres {
        for replicas in [1, 2] {
            for n in FLEETS {
                for m in ["pickup_seconds", "reports_per_second"] {
                    out.push(format!("coordinator.postgres_{replicas}.hosts_{n}.{m}"));
                }
            }
        }
    }
    for scheme in ["http", "https"] {
        out.push(format!("coordinator.held_poll_{scheme}_kib"));
        if postgres {
            out.push(format!("coordinator.postgres.held_poll_{scheme}_kib"));
        }
    }
    out.extend(
        [
            "convergence.hosts_50.other_group_seconds",
            "convergence.hosts_50.other_group_seconds_vs_ordinary_deployment",
            "convergence.hosts_50.catch_up_seconds",
        ]
        .map(String::from),
    );
    out
}

/// Figures read from the `duration_ms` of an agent's deployment record: whole milliseconds.
const MILLISECOND_RECORDS: [&str; 1] = ["rollback.switch_seconds"];

/// What is wrong with a document's figures, one sentence each; empty when every figure is
/// well formed. With `expected`, the measurements must be exactly those names in that order.
/// No timing is judged here: a slow or busy machine must not fail a run, only a figure that
/// is missing, not finite, or of the wrong sign.
pub fn problems(doc: &Document, table: &str, expected: Option<&[&str]>) -> Vec<String> {
    let mut out = Vec::new();
    let names: Vec<&str> = doc.measurements.iter().map(|m| m.name.as_str()).collect();
    if let Some(expected) = expected {
        if names != expected {
            out.push(format!("measurements are {names:?}, expected {expected:?}"));
        }
    }
    for m in &doc.measurements {
        let name = &m.name;
        let s = &m.stat;
        if !(s.min <= s.median && s.median <= s.max) {
            out.push(format!(
                "{name}: min {} <= median {} <= max {} does not hold",
                s.min, s.median, s.max
            ));
        }
        // Latencies may be a hair below zero (an agent can start before the CLI process has
        // exited); CPU may be zero when idle; a duration read from an agent's record has
        // millisecond resolution, so a switch under 1 ms reads 0. Everything else is strictly
        // positive.
        if name.ends_with("cpu_percent") || MILLISECOND_RECORDS.contains(&name.as_str()) {
            if s.min < 0.0 {
                out.push(format!("{name}: negative minimum {}", s.min));
            }
        } else if name.starts_with("pickup.") {
            if !(s.max > -0.1 && s.median < 60.0) {
                out.push(format!(
                    "{name}: max {} and median {} are not a pickup latency",
                    s.max, s.median
                ));
            }
        } else if s.min <= 0.0 {
            out.push(format!("{name}: minimum {} is not positive", s.min));
        }
        if name.starts_with("apply.") || name.ends_with("_mib") && name.starts_with("footprint.") {
            match (&m.ratio, &m.baseline) {
                (Some(ratio), Some(baseline)) => {
                    if !(ratio.median.is_finite() && ratio.median > 0.0) {
                        out.push(format!(
                            "{name}: ratio {} is not a positive number",
                            ratio.median
                        ));
                    }
                    if baseline.median <= 0.0 {
                        out.push(format!(
                            "{name}: baseline {} is not positive",
                            baseline.median
                        ));
                    }
                }
                _ => out.push(format!("{name}: no baseline or ratio")),
            }
        }
        if m.target.is_some() && m.met.is_none() {
            out.push(format!("{name}: a target but no verdict"));
        }
        if !table.contains(name.as_str()) {
            out.push(format!("{name}: missing from the table"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(measurements: Vec<Measurement>) -> Document {
        Document {
            tool: "hoist-bench test".into(),
            quick: true,
            started_utc: String::new(),
            machine: Machine {
                cpus: 1,
                memory_gib: 1.0,
                kernel: String::new(),
                load_average_at_start: String::new(),
            },
            measurements,
            notes: Vec::new(),
        }
    }

    fn stat(v: &[f64]) -> Stat {
        Stat::of(v).unwrap()
    }

    #[test]
    fn well_formed_figures_have_no_problems() {
        let d = doc(vec![
            Measurement::new("apply.zip.seconds", "s", stat(&[1.0, 2.0]), "")
                .baseline("cp", stat(&[1.0]), None)
                .target("ratio <= 1.3", true),
            Measurement::new("pickup.agents_1.seconds", "s", stat(&[-0.01, 0.2]), ""),
            Measurement::new("footprint.idle_cpu_percent", "%", stat(&[0.0]), ""),
            Measurement::new("rollback.switch_seconds", "s", stat(&[0.0, 0.001]), ""),
        ]);
        let table = table(&d.measurements);
        let names = [
            "apply.zip.seconds",
            "pickup.agents_1.seconds",
            "footprint.idle_cpu_percent",
            "rollback.switch_seconds",
        ];
        assert_eq!(problems(&d, &table, Some(&names)), Vec::<String>::new());
    }

    #[test]
    fn a_missing_or_malformed_figure_is_a_problem() {
        let d = doc(vec![
            Measurement::new("apply.zip.seconds", "s", stat(&[0.0]), ""),
            Measurement::new("footprint.idle_rss_mib", "MiB", stat(&[3.0]), "").baseline(
                "sleep",
                stat(&[0.0]),
                Some(stat(&[1.0])),
            ),
            Measurement::new("rollback.switch_seconds", "s", stat(&[-0.001]), ""),
        ]);
        let table = table(&d.measurements);
        let found = problems(
            &d,
            &table,
            Some(&["apply.zip.seconds", "apply.tar_gz.seconds"]),
        );
        let text = found.join("\n");
        assert!(text.contains("measurements are"), "{text}");
        assert!(
            text.contains("apply.zip.seconds: minimum 0 is not positive"),
            "{text}"
        );
        assert!(
            text.contains("apply.zip.seconds: no baseline or ratio"),
            "{text}"
        );
        assert!(
            text.contains("footprint.idle_rss_mib: baseline 0 is not positive"),
            "{text}"
        );
        assert!(
            text.contains("rollback.switch_seconds: negative minimum -0.001"),
            "{text}"
        );
        assert!(problems(&d, "", None)
            .iter()
            .any(|p| p.contains("missing from the table")));
    }

    #[test]
    fn stat_median_min_max_p99() {
        let s = Stat::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.p99), (3.0, 1.0, 5.0, 5.0));
        let many: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Stat::of(&many).unwrap();
        assert_eq!((s.median, s.p99), (100.0, 198.0));
        assert!(Stat::of(&[]).is_none());
        assert!(Stat::of(&[f64::NAN]).is_none());
    }
}
