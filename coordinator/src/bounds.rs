//! What the coordinator accepts from a host, and how much of it: host names, tags and
//! agent versions (length and character set, checked at registration, on a tag request
//! and when an operator sets tags), and event reports (known lifecycle events only, a
//! sequence number within the per-command cap, every free-text field capped with the cut
//! marked).
//!
//! Pure functions, no IO. Not here: what a valid report does to its command (the
//! `service`), or how large a request body may be (the API's limits).

use std::collections::BTreeMap;

use hoist_protocol::agent::{Report, ReportBody};
use hoist_protocol::operator::LIFECYCLE_EVENTS;

/// Longest host name (an FQDN fits).
pub const MAX_HOST_NAME: usize = 128;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_KEY: usize = 64;
pub const MAX_TAG_VALUE: usize = 128;
pub const MAX_AGENT_VERSION: usize = 64;
/// Reports per command: sequence numbers run from 1 to this, and (command, seq) is
/// recorded once, so no command holds more. A deployment of every lifecycle event sends 23.
pub const MAX_REPORTS_PER_COMMAND: u64 = 256;
pub const MAX_MESSAGE: usize = 4 * 1024;
pub const MAX_SCRIPT: usize = 1024;
/// The agent sends the last 4 KiB of a hook's output.
pub const MAX_LOG_TAIL: usize = 16 * 1024;
/// Appended to a field cut at its cap (prepended, for a log tail, whose end is kept).
pub const TRUNCATED: &str = "… [truncated]";

/// Host text as it may appear in an error message or a log line: Debug-quoted (control
/// characters escaped) and at most 64 characters.
pub fn shown(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

fn check_text(
    what: &str,
    s: &str,
    min: usize,
    max: usize,
    extra: &[u8],
    allowed: &str,
) -> Result<(), String> {
    let ok = (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {}: must be {min} to {max} letters, digits{allowed}",
            shown(s)
        ))
    }
}

pub fn check_host_name(name: &str) -> Result<(), String> {
    check_text("name", name, 1, MAX_HOST_NAME, b"._-", ", '.', '_' or '-'")
}

pub fn check_agent_version(version: &str) -> Result<(), String> {
    check_text(
        "agent_version",
        version,
        1,
        MAX_AGENT_VERSION,
        b".+_-~",
        ", '.', '+', '_', '-' or '~'",
    )
}

pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    check_text(
        "tag key",
        key,
        1,
        MAX_TAG_KEY,
        b"._-/:",
        ", '.', '_', '-', '/' or ':'",
    )?;
    check_text(
        &format!("tag {key}: value"),
        value,
        0,
        MAX_TAG_VALUE,
        b"._-/:@+",
        ", '.', '_', '-', '/', ':', '@' or '+'",
    )
}

pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "tags: {} tags, at most {MAX_TAGS} are allowed",
            tags.len()
        ));
    }
    tags.iter().try_for_each(|(k, v)| check_tag(k, v))
}

/// The largest index at most `at` that is a character boundary of `s`.
fn boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Keeps the first `max` bytes (marker included) of a field that is too long.
pub fn cap_head(s: &mut String, max: usize) {
    if s.len() > max {
        let keep = boundary(s, max.saturating_sub(TRUNCATED.len()));
        s.truncate(keep);
        s.push_str(TRUNCATED);
    }
}

/// Keeps the last `max` bytes (marker included) of a field that is too long: for a log
/// tail, the end is what matters.
pub fn cap_tail(s: &mut String, max: usize) {
    if s.len() > max {
        let mut from = s.len() - max.saturating_sub(TRUNCATED.len());
        while from < s.len() && !s.is_char_boundary(from) {
            from += 1;
        }
        *s = format!("{TRUNCATED}{}", &s[from..]);
    }
}

fn check_event(field: &str, event: &str) -> Result<(), String> {
    if LIFECYCLE_EVENTS.contains(&event) {
        Ok(())
    } else {
        Err(format!(
            "{field} {}: not a lifecycle event (expected one of {})",
            shown(event),
            LIFECYCLE_EVENTS.join(", ")
        ))
    }
}

/// A report as the coordinator records it: refused when its sequence number is outside
/// 1..=[`MAX_REPORTS_PER_COMMAND`] or it names an unknown lifecycle event; its message,
/// script and log tail capped.
pub fn bound_report(mut report: Report) -> Result<Report, String> {
    if !(1..=MAX_REPORTS_PER_COMMAND).contains(&report.seq) {
        return Err(format!(
            "seq {}: must be from 1 to {MAX_REPORTS_PER_COMMAND} (the most reports a command takes)",
            report.seq
        ));
    }
    let cap = |field: &mut Option<String>, max: usize| {
        if let Some(s) = field.as_mut() {
            cap_head(s, max);
        }
    };
    match &mut report.body {
        ReportBody::EventStarted { event } => check_event("event", event)?,
        ReportBody::EventEnded {
            event,
            message,
            script,
            log_tail,
            ..
        } => {
            check_event("event", event)?;
            cap(message, MAX_MESSAGE);
            cap(script, MAX_SCRIPT);
            if let Some(t) = log_tail.as_mut() {
                cap_tail(t, MAX_LOG_TAIL);
            }
        }
        ReportBody::Completed {
            failed_event,
            message,
            ..
        } => {
            if let Some(e) = failed_event {
                check_event("failed_event", e)?;
            }
            cap(message, MAX_MESSAGE);
        }
        // Recorded as `{"type":"unknown"}`: nothing of it is kept.
        ReportBody::Unknown => {}
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_versions_are_limited_in_length_and_characters() {
        assert!(check_host_name("web-01.example.internal").is_ok());
        for bad in ["", "web\u{1b}[31m", "a b", "web\n01", &"x".repeat(129)] {
            let err = check_host_name(bad).unwrap_err();
            assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err}");
        }
        assert!(check_tag("env", "prod").is_ok());
        assert!(check_tag("env", "").is_ok());
        assert!(check_tag("", "x").is_err());
        assert!(check_tag("env", "a=b").is_err());
        assert!(check_tag("env", &"v".repeat(129)).is_err());
        assert!(check_agent_version("0.1.0-test").is_ok());
        assert!(check_agent_version("0.1\r").is_err());
        let many: BTreeMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_tags(&many).unwrap_err().contains("at most 32"));
    }

    #[test]
    fn caps_keep_char_boundaries_and_mark_the_cut() {
        let mut s = "é".repeat(100);
        cap_head(&mut s, 50);
        assert!(s.len() <= 50 && s.ends_with(TRUNCATED), "{s}");
        let mut t = format!("{}end", "é".repeat(100));
        cap_tail(&mut t, 50);
        assert!(
            t.len() <= 50 && t.starts_with(TRUNCATED) && t.ends_with("end"),
            "{t}"
        );
        let mut short = "fine".to_owned();
        cap_head(&mut short, 50);
        assert_eq!(short, "fine");
    }

    #[test]
    fn shown_escapes_and_shortens() {
        assert_eq!(shown("a\u{1b}b"), r#""a\u{1b}b""#);
        assert!(shown(&"x".repeat(1000)).len() < 80);
    }
}
