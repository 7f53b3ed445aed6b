//! The harness at small size (`hoist-bench all --quick --json`), so it keeps working: every
//! measurement is present with finite, positive figures. No timing is asserted — a slow or
//! busy machine must not fail this test; the targets are for the full run to report.

use std::path::PathBuf;
use std::process::Command;

/// The directory cargo put this package's binary in; `hoist` and `hoist-agent` are built
/// there by `cargo test --workspace` (or `cargo build --workspace --bins`).
fn bin_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_hoist-bench"));
    let dir = exe.parent().expect("binary has a directory").to_path_buf();
    for b in ["hoist", "hoist-agent"] {
        assert!(
            dir.join(b).is_file(),
            "{} missing: build it first with `cargo build --workspace --bins`",
            dir.join(b).display()
        );
    }
    dir
}

#[test]
fn quick_run_reports_every_measurement() {
    let dir = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hoist-bench"))
        .args(["all", "--quick", "--json"])
        .arg(&json)
        .arg("--bin-dir")
        .arg(&dir)
        .arg("--work-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hoist-bench failed: {}", out.status);

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["quick"], true);
    let ms = doc["measurements"].as_array().unwrap();
    let names: Vec<&str> = ms.iter().map(|m| m["name"].as_str().unwrap()).collect();
    let expected = [
        "apply.tar_gz.seconds",
        "apply.tar_gz.seconds_vs_durable_floor",
        "apply.tar_gz.mb_per_s",
        "apply.zip.seconds",
        "apply.zip.seconds_vs_durable_floor",
        "apply.zip.mb_per_s",
        "pickup.agents_1.seconds",
        "pickup.agents_5.seconds",
        "footprint.idle_rss_mib",
        "footprint.idle_cpu_percent",
        "footprint.rss_after_deployments_mib",
        "coordinator.hosts_20.pickup_seconds",
        "coordinator.hosts_20.all_assigned_seconds",
        "coordinator.hosts_20.server_cpu_percent",
        "coordinator.hosts_20.server_rss_mib",
        "coordinator.hosts_100.pickup_seconds",
        "coordinator.hosts_100.all_assigned_seconds",
        "coordinator.hosts_100.server_cpu_percent",
        "coordinator.hosts_100.server_rss_mib",
    ];
    assert_eq!(names, expected);

    for m in ms {
        let name = m["name"].as_str().unwrap();
        let stat = &m["stat"];
        let (median, min, max) = (
            stat["median"].as_f64().unwrap(),
            stat["min"].as_f64().unwrap(),
            stat["max"].as_f64().unwrap(),
        );
        assert!(min <= median && median <= max, "{name}: {stat}");
        // Latencies may be a hair below zero (an agent can start before the CLI process has
        // exited); CPU may be zero when idle. Everything else is strictly positive.
        if name.ends_with("cpu_percent") {
            assert!(min >= 0.0, "{name}: {stat}");
        } else if name.starts_with("pickup.") {
            assert!(max > -0.1 && median < 60.0, "{name}: {stat}");
        } else {
            assert!(min > 0.0, "{name}: {stat}");
        }
        if name.starts_with("apply.") || name.ends_with("_mib") && name.starts_with("footprint.") {
            let ratio = m["ratio"]["median"].as_f64().unwrap();
            assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
            assert!(m["baseline"]["median"].as_f64().unwrap() > 0.0, "{name}");
        }
        if m["target"].is_string() {
            assert!(m["met"].is_boolean(), "{name}");
        }
        assert!(stdout.contains(name), "table lacks {name}");
    }
}
