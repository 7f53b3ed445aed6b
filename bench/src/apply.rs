//! Bundle apply: `hoist-agent deploy` of a generated bundle fetched from the local S3 server
//! through a presigned URL (download, sha256 check, extraction, install), against the floor on
//! the same data and disk: `sha256sum` + `tar -xzf` (or `unzip`) + `cp -a` of the archive
//! already on disk, and against that floor plus `sync` (the agent makes what it installed
//! durable before Install succeeds; `cp -a` does not). Peak memory: the agent's against the
//! floor's extraction step, as GNU `time` reports them.
//!
//! Runs alternate (the order of the steps rotates from one run to the next) and each run's
//! ratio is taken against the other steps of the same run, so a machine that slows down
//! mid-way skews both alike. Before every timed step, untimed, dirty pages are flushed
//! (`sync`) and the page cache is dropped (`/proc/sys/vm/drop_caches`, as root), so no step
//! inherits another's write-back backlog or finds the archive already cached; the programs
//! the steps run are then read back in, so neither side loads its executable from disk. With
//! `--base-agent`, a second `hoist-agent` build runs the same steps in the same runs (its
//! time and memory against this one's). Not measured: the previous revision's cleanup
//! (every run starts from an empty destination and state directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::procs::{timed, Bins};
use crate::report::{Measurement, Stat};
use crate::s3::S3Server;

#[derive(Debug, Clone)]
pub struct Params {
    pub total_bytes: u64,
    pub files: usize,
    pub runs: usize,
    /// Another `hoist-agent` build to run in the same runs (`--base-agent`).
    pub base_agent: Option<PathBuf>,
}

/// Both archive formats of one generated tree.
struct Inputs {
    /// Bytes of file contents in the tree.
    payload: u64,
    files: usize,
    tgz: PathBuf,
    zip: PathBuf,
}

pub fn run(bins: &Bins, work: &Path, p: Params) -> anyhow::Result<Vec<Measurement>> {
    if let Some(base) = &p.base_agent {
        if !base.is_file() {
            bail!("--base-agent {}: no such file", base.display());
        }
    }
    eprintln!(
        "apply: generating {} files, {:.1} MB",
        p.files,
        p.total_bytes as f64 / 1e6
    );
    let s3 = S3Server::start(&work.join("s3"))?;
    let inputs = build_inputs(work, &s3, &p)?;
    let mut out = Vec::new();
    for (label, archive, key) in [
        ("tar_gz", &inputs.tgz, "bundle.tgz"),
        ("zip", &inputs.zip, "bundle.zip"),
    ] {
        out.extend(measure_format(
            bins,
            p.base_agent.as_deref(),
            work,
            &s3,
            &inputs,
            label,
            archive,
            key,
            p.runs,
        )?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn measure_format(
    bins: &Bins,
    base_agent: Option<&Path>,
    work: &Path,
    s3: &S3Server,
    inputs: &Inputs,
    label: &str,
    archive: &Path,
    key: &str,
    runs: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let sha = sha256sum(archive)?;
    let url = s3.presigned_get(key);
    let dest = work.join("dest");
    let state = work.join("agent-state");
    let unpack = work.join("unpack");
    let mut hoist = Vec::new();
    let mut floor = Vec::new();
    let mut durable = Vec::new();
    let mut base = Vec::new();
    let (mut hoist_rss, mut floor_rss, mut base_rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps = vec![Step::Floor, Step::Agent];
    if base_agent.is_some() {
        steps.push(Step::Base);
    }
    let mut agents = vec![bins.agent.as_path()];
    agents.extend(base_agent);
    let programs = programs(&agents);
    let warm: Vec<&Path> = programs.iter().map(PathBuf::as_path).collect();
    for r in 0..runs {
        let mut order = steps.clone();
        order.rotate_left(r % steps.len());
        for step in order {
            for d in [&dest, &state, &unpack] {
                remove(d)?;
            }
            std::fs::create_dir_all(&dest).context("creating the destination")?;
            settle(&warm)?;
            let agent = match step {
                Step::Floor => {
                    let (t, rss) = floor_run(archive, label, &unpack, &dest)?;
                    floor.push(t.as_secs_f64());
                    floor_rss.push(rss as f64 / MIB);
                    // The floor leaves its writes in the page cache; hoist-agent makes them
                    // durable before it reports Install done. Also time that write-back.
                    durable.push((t + timed(&mut Command::new("sync"))?).as_secs_f64());
                    check_installed(&dest, inputs)?;
                    continue;
                }
                Step::Agent => bins.agent.as_path(),
                Step::Base => base_agent.unwrap_or(&bins.agent),
            };
            let (t, rss) = timed_peak(
                Command::new(agent)
                    .args(["deploy", "--bundle", &url, "--sha256", &sha])
                    .args(["--app", "bench", "--group", "apply", "--state-dir"])
                    .arg(&state),
            )?;
            let (times, peaks) = match step {
                Step::Base => (&mut base, &mut base_rss),
                _ => (&mut hoist, &mut hoist_rss),
            };
            times.push(t.as_secs_f64());
            peaks.push(rss as f64 / MIB);
            check_installed(&dest, inputs)?;
        }
        let base_text = base
            .get(r)
            .map(|b| format!(", base agent {b:.3} s"))
            .unwrap_or_default();
        eprintln!(
            "apply {label} run {}: hoist {:.3} s, floor {:.3} s (+ sync {:.3} s){base_text}",
            r + 1,
            hoist[r],
            floor[r],
            durable[r]
        );
    }
    for d in [&dest, &state, &unpack] {
        remove(d)?;
    }
    let ratios: Vec<f64> = hoist.iter().zip(&floor).map(|(h, f)| h / f).collect();
    let durable_ratios: Vec<f64> = hoist.iter().zip(&durable).map(|(h, f)| h / f).collect();
    let mb = inputs.payload as f64 / 1e6;
    let mbps = |v: &[f64]| v.iter().map(|s| mb / s).collect::<Vec<_>>();
    let mbps_ratio: Vec<f64> = ratios.iter().map(|r| 1.0 / r).collect();
    let stat = |v: &[f64]| Stat::of(v).context("no apply samples");
    let ratio = stat(&ratios)?;
    let met = ratio.median <= 1.3;
    let durable_ratio = stat(&durable_ratios)?;
    let durable_met = durable_ratio.median <= 1.0;
    let what = format!(
        "{} files, {:.1} MB of contents, archive {:.1} MB",
        inputs.files,
        mb,
        std::fs::metadata(archive).map_or(0, |m| m.len()) as f64 / 1e6
    );
    let mut out = vec![
        Measurement::new(
            &format!("apply.{label}.seconds"),
            "s",
            stat(&hoist)?,
            format!("hoist-agent deploy of a presigned S3 URL (fetch, verify, extract, install); {what}"),
        )
        .baseline(
            if label == "zip" {
                "sha256sum + unzip + cp -a (archive already on disk)"
            } else {
                "sha256sum + tar -xzf + cp -a (archive already on disk)"
            },
            stat(&floor)?,
            Some(ratio),
        )
        .target("ratio <= 1.3", met),
        Measurement::new(
            &format!("apply.{label}.seconds_vs_durable_floor"),
            "s",
            stat(&hoist)?,
            "the same runs, against the floor followed by `sync` (hoist-agent syncs what it installs)",
        )
        .baseline("the floor + sync", stat(&durable)?, Some(durable_ratio))
        .target("ratio <= 1.0", durable_met),
        Measurement::new(
            &format!("apply.{label}.mb_per_s"),
            "MB/s",
            stat(&mbps(&hoist))?,
            format!("contents installed per second; {what}"),
        )
        .baseline("floor MB/s", stat(&mbps(&floor))?, Some(stat(&mbps_ratio)?)),
        Measurement::new(
            &format!("apply.{label}.peak_rss_mib"),
            "MiB",
            stat(&hoist_rss)?,
            "peak resident memory of hoist-agent deploy in the same runs (GNU time %M)",
        )
        .baseline(
            if label == "zip" { "unzip" } else { "tar -xzf" },
            stat(&floor_rss)?,
            None,
        ),
    ];
    if let Some(path) = base_agent {
        let vs_base: Vec<f64> = hoist.iter().zip(&base).map(|(h, b)| h / b).collect();
        let rss_vs_base: Vec<f64> = hoist_rss
            .iter()
            .zip(&base_rss)
            .map(|(h, b)| h / b)
            .collect();
        let name = format!("hoist-agent {}", path.display());
        out.push(
            Measurement::new(
                &format!("apply.{label}.seconds_vs_base_agent"),
                "s",
                stat(&hoist)?,
                "the same runs, against another hoist-agent build (--base-agent)",
            )
            .baseline(&name, stat(&base)?, Some(stat(&vs_base)?)),
        );
        out.push(
            Measurement::new(
                &format!("apply.{label}.peak_rss_mib_vs_base_agent"),
                "MiB",
                stat(&hoist_rss)?,
                "peak resident memory (GNU time %M), against the --base-agent build",
            )
            .baseline(&name, stat(&base_rss)?, Some(stat(&rss_vs_base)?)),
        );
    }
    Ok(out)
}

/// One timed step of a run.
#[derive(Debug, Clone, Copy)]
enum Step {
    Floor,
    Agent,
    Base,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs a command to completion under GNU `time`: its time and its peak resident memory
/// (`%M`). Not `wait4` of our own child: a child spawned by this process starts with this
/// process's memory high-water mark, which would hide a smaller child's. Fails on a
/// non-zero exit.
fn timed_peak(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let out = tempfile_path("peak-rss")?;
    let mut under_time = Command::new("/usr/bin/time");
    under_time
        .args(["-f", "%M", "-o"])
        .arg(&out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time not found: install GNU time (apt-get install time)");
    }
    let took = timed(&mut under_time)?;
    let text =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    let kib: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no peak memory in GNU time's output {text:?}"))?;
    Ok((took, kib * 1024))
}

/// A fresh path in the temporary directory for a tool's output file.
fn tempfile_path(what: &str) -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Ok(std::env::temp_dir().join(format!(
        "hoist-bench-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )))
}

/// The floor's time, and the peak memory of its extraction step.
fn floor_run(
    archive: &Path,
    label: &str,
    unpack: &Path,
    dest: &Path,
) -> anyhow::Result<(Duration, u64)> {
    std::fs::create_dir_all(unpack).context("creating the unpack directory")?;
    let mut t = timed(Command::new("sha256sum").arg(archive))?;
    let (extract, rss) = if label == "zip" {
        timed_peak(
            Command::new("unzip")
                .arg("-q")
                .arg(archive)
                .arg("-d")
                .arg(unpack),
        )?
    } else {
        timed_peak(
            Command::new("tar")
                .arg("-xzf")
                .arg(archive)
                .arg("-C")
                .arg(unpack),
        )?
    };
    t += extract;
    t += timed(
        Command::new("cp")
            .arg("-a")
            .arg(unpack.join("app").join("."))
            .arg(dest),
    )?;
    Ok((t, rss))
}

/// The run installed everything: the file count under `dest` matches the tree.
fn check_installed(dest: &Path, inputs: &Inputs) -> anyhow::Result<()> {
    let n = count_files(dest)?;
    if n != inputs.files {
        bail!(
            "{} holds {n} files after the run, expected {}",
            dest.display(),
            inputs.files
        );
    }
    Ok(())
}

fn count_files(dir: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let t = e.file_type().context("file type")?;
            if t.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn remove(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Flushes dirty pages and, where permitted (root), drops the page cache, so the next step
/// neither waits for the previous one's write-back nor reads what it left cached. The
/// programs the steps run are read back into the cache (`warm`), so no side pays for loading
/// its executable from disk.
fn settle(warm: &[&Path]) -> anyhow::Result<()> {
    timed(&mut Command::new("sync"))?;
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("apply: cannot drop the page cache ({e}); steps start after `sync` only")
        });
    }
    for path in warm {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        std::io::copy(&mut file, &mut std::io::sink())
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(())
}

/// The programs a run's steps execute, for [`settle`] to keep cached: the agents and the
/// floor's tools found in /usr/bin or /bin.
fn programs(agents: &[&Path]) -> Vec<PathBuf> {
    let tools = ["sha256sum", "tar", "gzip", "unzip", "cp", "sync"];
    let found = tools.iter().filter_map(|tool| {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.is_file())
    });
    agents
        .iter()
        .map(|a| a.to_path_buf())
        .chain(found)
        .collect()
}

fn sha256sum(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(h) if out.status.success() && h.len() == 64 => Ok(h.to_string()),
        _ => bail!("sha256sum {} failed", path.display()),
    }
}

/// A small deterministic generator: the same tree on every run and machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

/// File sizes of mixed classes (most small, some medium, a few large) scaled to `total`.
fn sizes(total: u64, files: usize, rng: &mut XorShift) -> Vec<u64> {
    let weights: Vec<f64> = (0..files)
        .map(|_| match rng.next() % 1000 {
            0..=4 => rng.range(1000.0, 4000.0),
            5..=99 => rng.range(8.0, 128.0),
            _ => rng.range(0.2, 4.0),
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| ((w / sum) * total as f64) as u64)
        .collect()
}

/// Contents: alternating 4 KiB blocks of random bytes and text, so gzip and deflate work
/// about as hard as on a real application tree.
fn contents(len: u64, rng: &mut XorShift, buf: &mut Vec<u8>) {
    buf.clear();
    let mut block = 0u64;
    while (buf.len() as u64) < len {
        let want = (len - buf.len() as u64).min(4096) as usize;
        let end = buf.len() + want;
        if block.is_multiple_of(2) {
            while buf.len() < end {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            let line = format!("line {block} of a configuration file with some words\n");
            while buf.len() < end {
                buf.extend_from_slice(line.as_bytes());
            }
        }
        buf.truncate(end);
        block += 1;
    }
}

fn build_inputs(work: &Path, s3: &S3Server, p: &Params) -> anyhow::Result<Inputs> {
    let tree = work.join("tree");
    remove(&tree)?;
    let app = tree.join("app");
    let dest = work.join("dest");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::new();
    let mut payload = 0;
    for (i, len) in sizes(p.total_bytes, p.files, &mut rng)
        .into_iter()
        .enumerate()
    {
        let dir = app.join(format!("a{:02}/b{}", i / 1000, (i / 100) % 10));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        contents(len, &mut rng, &mut buf);
        let path = dir.join(format!("f{i:05}.dat"));
        std::fs::write(&path, &buf).with_context(|| format!("writing {}", path.display()))?;
        payload += len;
    }
    std::fs::write(
        tree.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n",
            dest.display()
        ),
    )
    .context("writing the appspec")?;
    let tgz = s3.object_path("bundle.tgz");
    let zip = s3.object_path("bundle.zip");
    timed(
        Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&tree)
            .arg("."),
    )?;
    timed(
        Command::new("zip")
            .args(["-q", "-r"])
            .arg(&zip)
            .arg(".")
            .current_dir(&tree),
    )?;
    Ok(Inputs {
        payload,
        files: p.files,
        tgz,
        zip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_and_mix_classes() {
        let mut rng = XorShift(7);
        let s = sizes(200_000_000, 20_000, &mut rng);
        let total: u64 = s.iter().sum();
        assert!((199_000_000..=200_000_000).contains(&total), "{total}");
        assert!(s.iter().filter(|&&x| x < 4096).count() > 15_000);
        assert!(s.iter().any(|&x| x > 1_000_000));
    }

    #[test]
    fn contents_have_the_asked_length() {
        let mut rng = XorShift(7);
        let mut buf = Vec::new();
        for len in [0, 1, 4095, 4096, 4097, 10_000, 70_001] {
            contents(len, &mut rng, &mut buf);
            assert_eq!(buf.len() as u64, len);
        }
    }
}
