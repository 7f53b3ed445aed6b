//! The agent's one retry policy, shared by everything that talks over the network: the
//! daemon's registration, polls and reports (through `client`) and bundle downloads (through
//! `bundle::fetch`).
//!
//! Delays grow exponentially with jitter from `poll.initial_backoff_ms` up to
//! `poll.max_backoff_secs`, and no delay, jitter included, exceeds that maximum. A server's
//! `Retry-After` (seconds or an HTTP date) replaces the next delay but is capped at the same
//! maximum: one `Retry-After: 86400` from a proxy must not silence a host for a day.
//!
//! It does not decide what is worth retrying (the callers do, from the status) nor how many
//! times (downloads count attempts, the daemon retries for ever).

use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;

use crate::config::PollConfig;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first delay; doubles per attempt.
    pub initial: Duration,
    /// No wait is longer, whatever the backoff or the server says.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// The config's defaults (`poll.initial_backoff_ms: 500`, `poll.max_backoff_secs: 60`).
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The agent's one retry policy, from the config's `poll` section: for the coordinator
    /// and for downloads.
    pub fn from_config(poll: &PollConfig) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(poll.initial_backoff_ms),
            max: Duration::from_secs(poll.max_backoff_secs),
        }
    }

    /// A fresh sequence of delays, to restart after a success.
    pub fn delays(&self) -> Delays {
        let initial = self.initial.max(Duration::from_millis(1)).min(self.max);
        Delays {
            inner: backon::ExponentialBuilder::default()
                .with_min_delay(initial)
                .with_max_delay(self.max)
                .with_jitter()
                .without_max_times()
                .build(),
            max: self.max,
        }
    }

    /// The wait before the next attempt: the server's `Retry-After` when it sent one, else
    /// the next backoff delay; never more than [`RetryPolicy::max`].
    pub fn next_delay(&self, delays: &mut Delays, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.max),
            None => delays.next_delay(),
        }
    }
}

/// Exponential delays with jitter, each at most the policy's maximum.
pub struct Delays {
    inner: backon::ExponentialBackoff,
    max: Duration,
}

impl Delays {
    /// The next delay (backon adds jitter on top of a capped delay, so it is capped again).
    pub fn next_delay(&mut self) -> Duration {
        self.inner.next().unwrap_or(self.max).min(self.max)
    }
}

/// A `Retry-After` header's value, as seconds or an HTTP date; `None` when it is neither.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The `Retry-After` of a response's headers.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_the_configs_poll_backoff() {
        let config = crate::config::Config::from_str(
            "poll:\n  initial_backoff_ms: 250\n  max_backoff_secs: 7\n",
            "agent.yaml",
        )
        .expect("parses");
        assert_eq!(
            RetryPolicy::from_config(&config.poll),
            RetryPolicy {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(7),
            }
        );
        let defaults = crate::config::PollConfig::default();
        assert_eq!(RetryPolicy::from_config(&defaults), RetryPolicy::default());
    }

    #[test]
    fn retry_after_is_capped_at_the_maximum_backoff() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(2),
        };
        let mut delays = policy.delays();
        for (asked, expected) in [
            (Duration::from_secs(86_400), Duration::from_secs(2)),
            (Duration::from_secs(1), Duration::from_secs(1)),
            (Duration::ZERO, Duration::ZERO),
        ] {
            assert_eq!(policy.next_delay(&mut delays, Some(asked)), expected);
        }
    }

    #[test]
    fn backoff_grows_and_never_exceeds_the_maximum() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
        };
        let mut delays = policy.delays();
        let seen: Vec<Duration> = (0..20)
            .map(|_| policy.next_delay(&mut delays, None))
            .collect();
        assert!(seen.iter().all(|d| *d <= policy.max), "{seen:?}");
        assert!(seen[0] >= policy.initial, "{seen:?}");
        assert!(seen[19] >= Duration::from_millis(400), "{seen:?}");
        // An initial delay above the maximum is the maximum.
        let odd = RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1),
        };
        assert!(odd.delays().next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon"), None);
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap_or_default();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let past = SystemTime::now() - Duration::from_secs(120);
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(past)),
            Some(Duration::ZERO)
        );
    }
}
