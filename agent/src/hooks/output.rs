//! A script's output: two append-only files per script in `<hook log>.d/`, which the
//! script writes instead of pipes, and the tailer that reads what it appended and writes it
//! into the hook log as lines.
//!
//! Files, not pipes, so that a daemon a script starts without redirecting its output neither
//! hangs the deployment nor dies of SIGPIPE once the agent stops reading. It does not decide
//! when to read: the supervisor (`run`) pumps the tailer on its ticks and once at the end.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::log::{HookLog, Stream};

/// A line longer than this (no newline in sight) is cut and logged in pieces, so one
/// runaway line cannot grow the agent's memory.
const MAX_LINE: usize = 8192;

/// Creates the two files a script writes its output to, `<log>.d/<n>-<label>.stdout` and
/// `.stderr` (append-only), and opens them again, separately, for the agent to read (a
/// shared descriptor would share its offset with the script's appends).
pub(super) fn create_output_files(
    log: &HookLog,
    label: &str,
) -> Result<(File, File, Tailer), String> {
    let dir = log.output_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("creating the output directory {}: {e}", dir.display()))?;
    let stem = file_stem(label);
    let mut n = next_number(&dir);
    let (out_path, out) = loop {
        let path = dir.join(format!("{n:03}-{stem}.stdout"));
        match OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
        {
            Ok(file) => break (path, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100_000 => n += 1,
            Err(e) => return Err(format!("creating {}: {e}", path.display())),
        }
    };
    let err_path = dir.join(format!("{n:03}-{stem}.stderr"));
    let err = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(&err_path)
        .map_err(|e| format!("creating {}: {e}", err_path.display()))?;
    let reader = |path: &Path| {
        File::open(path).map_err(|e| format!("opening {} for reading: {e}", path.display()))
    };
    let tailer = Tailer {
        streams: [
            StreamTail::new(Stream::Stdout, reader(&out_path)?),
            StreamTail::new(Stream::Stderr, reader(&err_path)?),
        ],
    };
    Ok((out, err, tailer))
}

/// The label as a file name: letters, digits, `.`, `-` and `_` kept, the rest `_`.
fn file_stem(label: &str) -> String {
    let stem: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if stem.is_empty() {
        "script".to_string()
    } else {
        stem
    }
}

/// One more than the highest number prefixing a file in `dir`.
fn next_number(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |n| n.saturating_add(1))
}

/// Reads what a script appended to its output files and writes it into the log as lines.
pub(super) struct Tailer {
    streams: [StreamTail; 2],
}

impl Tailer {
    /// Reads up to `limit` new bytes per stream; `last` also flushes an unfinished line.
    pub(super) fn pump(&mut self, log: &HookLog, label: &str, limit: u64, last: bool) {
        for stream in &mut self.streams {
            stream.pump(log, label, limit, last);
        }
    }
}

struct StreamTail {
    stream: Stream,
    file: File,
    /// Bytes after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
    /// Set after a read error was noted, so it is noted once.
    failed: bool,
}

impl StreamTail {
    fn new(stream: Stream, file: File) -> StreamTail {
        StreamTail {
            stream,
            file,
            partial: Vec::new(),
            failed: false,
        }
    }

    fn pump(&mut self, log: &HookLog, label: &str, limit: u64, last: bool) {
        let mut fresh = Vec::new();
        if let Err(err) = (&mut self.file).take(limit).read_to_end(&mut fresh) {
            if !self.failed {
                self.failed = true;
                log.note_hook(label, &format!("reading {}: {err}", self.stream.name()));
            }
        }
        self.partial.extend_from_slice(&fresh);
        for line in split_lines(&mut self.partial, last) {
            log.output_line(label, self.stream, &line);
        }
    }
}

/// Takes the complete lines out of `buf` (without their `\n` or `\r\n`), leaving an
/// unfinished line in it, unless `last`. A line longer than `MAX_LINE` is cut.
fn split_lines(buf: &mut Vec<u8>, last: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < buf.len() {
        let rest = &buf[start..];
        let (end, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (start + i, start + i + 1),
            _ if rest.len() > MAX_LINE => (start + MAX_LINE, start + MAX_LINE),
            _ if last => (buf.len(), buf.len()),
            _ => break,
        };
        let mut line = &buf[start..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
        start = next;
    }
    buf.drain(..start);
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_keeps_unfinished_line() {
        let mut buf = b"one\ntwo\r\nthr".to_vec();
        assert_eq!(split_lines(&mut buf, false), vec!["one", "two"]);
        assert_eq!(buf, b"thr");
        buf.extend_from_slice(b"ee\nfour");
        assert_eq!(split_lines(&mut buf, false), vec!["three"]);
        assert_eq!(split_lines(&mut buf, true), vec!["four"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn split_lines_cuts_runaway_line() {
        let mut buf = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = split_lines(&mut buf, false);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(buf.len(), 10);
    }
}
