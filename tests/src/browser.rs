//! What the dashboard's browser tests need besides their WebDriver client: `need_chromium`
//! (Debian's `chromium` and `chromium-driver`), the one starter of `chromedriver` (on a
//! free loopback port, killed on drop), the capabilities of a headless Chromium
//! (`--no-sandbox` when run as root, as CI does) and the directory screenshots are saved
//! to (`target/screenshots`). Not here: the WebDriver client itself (the tests' own
//! dev-dependency) or anything about the dashboard's pages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::need_tool;
use crate::servers::free_port;

/// Fails the calling test unless Chromium and its WebDriver are installed.
#[track_caller]
pub fn need_chromium() {
    need_tool("chromium", "the dashboard's browser tests");
    need_tool(
        "chromedriver",
        "the dashboard's browser tests drive Chromium over WebDriver",
    );
}

/// A running `chromedriver`, killed on drop.
pub struct ChromeDriver {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl ChromeDriver {
    /// Starts `chromedriver` on a free loopback port and waits until it says it started.
    pub fn start() -> ChromeDriver {
        let port = free_port();
        let mut child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let out = child.stdout.take().expect("chromedriver's stdout");
        let t0 = Instant::now();
        let mut lines = BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("started successfully") => break,
                Some(Ok(_)) => {}
                _ => panic!("chromedriver exited before it started"),
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The WebDriver capabilities of a headless Chromium with a fixed window size; as root it
/// needs `--no-sandbox`.
pub fn chromium_capabilities() -> serde_json::Map<String, serde_json::Value> {
    let mut args = vec![
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ];
    if nix::unistd::Uid::effective().is_root() {
        args.push("--no-sandbox");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    caps
}

/// `target/screenshots`, created: where browser tests save their screenshots.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| Path::new("target").to_path_buf(), Path::to_path_buf);
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}
