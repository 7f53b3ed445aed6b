//! Crash consistency of Install: the agent killed right after Install reported success
//! leaves the installed tree on disk, not only in the page cache.
//!
//! A killed process loses nothing the kernel holds, so the test checks the kernel's own
//! account instead: no installed file has a dirty or under-writeback page left
//! (`cachestat`, Linux 6.5), and after the page cache is dropped every file and directory
//! entry reads back from disk with its contents.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use hoist_tests::{bin, need_root, run, walk, Scratch};

/// `struct cachestat_range` and `struct cachestat` of `<linux/mman.h>`.
#[repr(C)]
struct Range {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct CacheStat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// `cachestat`'s number, the same on every architecture (new system calls share one table);
/// this libc does not name it for x86_64.
const SYS_CACHESTAT: libc::c_long = 451;

/// Dirty and under-writeback pages of `path` in the page cache.
#[allow(unsafe_code)]
fn unwritten_pages(path: &Path) -> (u64, u64) {
    let file = fs::File::open(path).expect("open installed file");
    let range = Range { off: 0, len: 0 };
    let mut stat = CacheStat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for the call and laid out
    // as the kernel's structs; the descriptor is open (borrowed from `file`).
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "cachestat {} (needs Linux 6.5): {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    (stat.nr_dirty, stat.nr_writeback)
}

fn contents(i: usize) -> String {
    format!("file {i}\n").repeat(50 + i * 7)
}

#[test]
#[ignore = "needs root: drops the page cache"]
fn the_installed_tree_is_on_disk_when_the_agent_dies_right_after_install() {
    killed_right_after_install(None);
}

#[test]
#[ignore = "needs root: drops the page cache"]
fn the_installed_tree_is_on_disk_after_install_synced_each_file() {
    killed_right_after_install(Some("files"));
}

#[test]
#[ignore = "needs root: drops the page cache"]
fn the_installed_tree_is_on_disk_after_install_synced_the_filesystem() {
    killed_right_after_install(Some("filesystem"));
}

/// Deploys 300 files with `deployments.install_sync` set to `install_sync` (`None`: the
/// default, `auto`), kills the agent in the hook after Install, and checks the tree is on
/// disk.
fn killed_right_after_install(install_sync: Option<&str>) {
    need_root("writing /proc/sys/vm/drop_caches");
    let s = Scratch::new();
    let config = s.join("agent.yaml");
    let sync = install_sync
        .map(|m| format!("deployments:\n  install_sync: {m}\n"))
        .unwrap_or_default();
    fs::write(&config, sync).expect("config");
    let bundle = s.join("bundle");
    let dest = s.join("dest");
    let state = s.join("state");
    const FILES: usize = 300;
    for i in 0..FILES {
        let p = bundle.join(format!("app/d{}/e{}/f{i}.txt", i % 7, i % 3));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, contents(i)).expect("bundle file");
    }
    fs::write(
        bundle.join("appspec.yml"),
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\nhooks:\n  AfterInstall:\n    - location: die.sh\n",
            dest.display()
        ),
    )
    .expect("appspec");
    // No shell stands between the agent and a script: the script's parent is the agent.
    let die = bundle.join("die.sh");
    fs::write(&die, "#!/bin/sh\nkill -KILL \"$PPID\"\n").expect("script");
    fs::set_permissions(&die, fs::Permissions::from_mode(0o755)).expect("chmod");

    let out = run(Command::new(bin("hoist-agent"))
        .arg("deploy")
        .arg("--config")
        .arg(&config)
        .arg("--bundle")
        .arg(&bundle)
        .arg("--state-dir")
        .arg(&state)
        .args(["--app", "crash", "--group", "g"]));
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the agent was killed: {out:?}"
    );
    // It died in AfterInstall, Install having succeeded.
    // The marker is the last line of in-flight.log: "<checksum> <json>".
    let log = fs::read_to_string(state.join("in-flight.log")).expect("marker");
    let (_, last) = log
        .lines()
        .last()
        .and_then(|l| l.split_once(' '))
        .expect("a marker line");
    let marker: serde_json::Value = serde_json::from_str(last).expect("marker json");
    assert_eq!(marker["event"], "AfterInstall", "{marker}");
    let done = marker["record"]["events"].as_array().expect("events");
    assert!(
        done.iter()
            .any(|e| e["event"] == "Install" && e["status"] == "succeeded"),
        "{marker}"
    );

    // The hook log says how Install synced, so the mode asked for is the one that ran.
    let hook_log = walk(&state)
        .into_iter()
        .find(|p| p.ends_with("logs/hooks.log"))
        .expect("the deployment's hook log");
    let hook_log = fs::read_to_string(hook_log).expect("hook log");
    let said = match install_sync {
        Some("files") => vec!["each file synced"],
        Some(_) => vec!["their filesystem synced"],
        None => vec!["each file synced", "their filesystem synced"],
    };
    assert!(
        said.iter()
            .any(|s| hook_log.contains(&format!("{FILES} new files, {s}"))),
        "{hook_log}"
    );

    let installed: Vec<_> = walk(&dest).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(installed.len(), FILES);
    let unwritten: Vec<_> = installed
        .iter()
        .map(|p| (p, unwritten_pages(p)))
        .filter(|(_, pages)| *pages != (0, 0))
        .collect();
    assert!(
        unwritten.is_empty(),
        "installed files with (dirty, writeback) pages after Install succeeded: {unwritten:?}"
    );

    // Nothing of ours is dirty, so this evicts the tree (pages, dentries, inodes) and
    // what follows reads it from disk.
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
    for i in 0..FILES {
        let p = dest.join(format!("d{}/e{}/f{i}.txt", i % 7, i % 3));
        assert_eq!(
            fs::read_to_string(&p).expect("read back"),
            contents(i),
            "{}",
            p.display()
        );
    }
    assert_eq!(
        walk(&dest).into_iter().filter(|p| p.is_file()).count(),
        FILES
    );
}
