//! Results: summary statistics of repeated samples, one measurement per figure with its
//! baseline and ratio, the printed table and the JSON document.
//!
//! This module only shapes and prints numbers; it measures nothing and judges nothing beyond
//! comparing a figure with its stated target.

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

#[cfg(test)]
mod tests {
    use super::*;

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
