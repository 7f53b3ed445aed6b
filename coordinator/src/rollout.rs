//! The rollout rules: given the state of every target host of a deployment and its rollout
//! configuration, which hosts start now, and whether the deployment is over.
//!
//! Pure: no IO, no clock, no store. The service counts stored commands by [`HostState`],
//! calls [`decide_tally`] after every change and applies the result; [`decide`] is the
//! same over a list of hosts.
//!
//! The rules are CodeDeploy's "minimum healthy hosts" (userguide, instances-health, and the
//! `MinimumHealthyHosts` API reference):
//!
//! - A host is healthy unless its command is in progress (taken out of service) or failed.
//!   Pending hosts and succeeded hosts are healthy.
//! - Commands go out to as many hosts at once as the minimum allows: starting a host must
//!   leave at least `min_healthy` healthy hosts.
//! - The deployment fails, and hands out nothing more, as soon as the minimum can no longer
//!   be held: even if every running host succeeds, no pending host could be started
//!   (`targets - failed <= min_healthy` with hosts still pending), or fewer than the hosts
//!   needed for success could ever succeed.
//! - When every host is done it succeeded if at least `success_min` hosts succeeded, and
//!   always needs at least one success (CodeDeploy: "even if the minimum healthy hosts value
//!   is 0, deployment to at least one instance must succeed").
//!
//! The named configurations:
//!
//! - `AllAtOnce`: minimum 0; every host at once; succeeds when at least one host succeeds.
//! - `HalfAtATime`: minimum half the hosts, rounded up; up to half (rounded down, but at least
//!   one) at a time; succeeds when at least half (rounded up) succeed.
//! - `OneAtATime`: minimum all hosts but one; one at a time; fails as soon as any host but the
//!   last fails. When the last host fails the deployment still succeeds (CodeDeploy: "if the
//!   deployment to the last instance fails, the overall deployment is still successful"),
//!   except with a single host, where that host must succeed.
//! - `min-healthy=N` / `min-healthy=P%`: the percentage is of the deployment's hosts, rounded
//!   up (CodeDeploy "rounds up fractional instances"). A minimum that is not below the number
//!   of hosts leaves nothing to deploy to: the deployment fails at once (CodeDeploy's
//!   `HEALTH_CONSTRAINTS_INVALID`).

use std::fmt;

/// The rollout configuration as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    AllAtOnce,
    HalfAtATime,
    OneAtATime,
    MinHealthyHosts(u32),
    MinHealthyPercent(u8),
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Config::AllAtOnce => f.write_str("AllAtOnce"),
            Config::HalfAtATime => f.write_str("HalfAtATime"),
            Config::OneAtATime => f.write_str("OneAtATime"),
            Config::MinHealthyHosts(n) => write!(f, "min-healthy={n}"),
            Config::MinHealthyPercent(p) => write!(f, "min-healthy={p}%"),
        }
    }
}

/// Where one target host stands in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Nothing handed out yet.
    Pending,
    /// Handed out and not finished.
    InProgress,
    Succeeded,
    /// Failed, stopped on the host, or lost (no report within the lease).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep going (possibly waiting for running hosts).
    Running,
    Succeeded,
    /// Stop handing out commands; the sentence says why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Indices into the host slice to hand a command to now, in slice order.
    pub start: Vec<usize>,
    pub outcome: Outcome,
}

/// The two numbers a configuration comes down to for `targets` hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Healthy hosts that must remain when a host is taken out of service.
    pub min_healthy: usize,
    /// Succeeded hosts needed at the end.
    pub success_min: usize,
}

/// The limits of `config` on `targets` hosts, or why the configuration cannot run on them.
pub fn limits(config: Config, targets: usize) -> Result<Limits, String> {
    let n = targets;
    let custom = |min: usize, what: String| {
        if n > 0 && min >= n {
            Err(format!(
                "minimum healthy hosts {what} is not below the {n} target host{}: \
                 no host can be taken out of service",
                if n == 1 { "" } else { "s" }
            ))
        } else {
            Ok(Limits {
                min_healthy: min,
                success_min: min.max(1),
            })
        }
    };
    match config {
        Config::AllAtOnce => Ok(Limits {
            min_healthy: 0,
            success_min: 1,
        }),
        Config::HalfAtATime => {
            let half_up = n.div_ceil(2);
            Ok(Limits {
                // At least one host at a time, even for a single host.
                min_healthy: half_up.min(n.saturating_sub(1)),
                success_min: half_up.max(1),
            })
        }
        Config::OneAtATime => Ok(Limits {
            min_healthy: n.saturating_sub(1),
            success_min: n.saturating_sub(1).max(1),
        }),
        Config::MinHealthyHosts(count) => custom(count as usize, count.to_string()),
        Config::MinHealthyPercent(percent) => {
            let min = (n * usize::from(percent)).div_ceil(100);
            custom(min, format!("{percent}% ({min})"))
        }
    }
}

/// How many of a deployment's target hosts are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub pending: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl Tally {
    pub fn of(hosts: &[HostState]) -> Tally {
        let mut t = Tally::default();
        for h in hosts {
            t.add(*h, 1);
        }
        t
    }

    pub fn add(&mut self, state: HostState, n: usize) {
        match state {
            HostState::Pending => self.pending += n,
            HostState::InProgress => self.running += n,
            HostState::Succeeded => self.succeeded += n,
            HostState::Failed => self.failed += n,
        }
    }

    pub fn total(&self) -> usize {
        self.pending + self.running + self.succeeded + self.failed
    }
}

/// Decides what to do next for a deployment whose target hosts are in `hosts`.
pub fn decide(config: Config, hosts: &[HostState]) -> Decision {
    let (room, outcome) = decide_tally(config, Tally::of(hosts));
    Decision {
        start: hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == HostState::Pending)
            .map(|(i, _)| i)
            .take(room)
            .collect(),
        outcome,
    }
}

/// [`decide`] from the counts alone: how many pending hosts start now (the first ones in
/// rollout order), and the outcome. The rules need nothing else, so a large deployment
/// is decided without reading every host.
pub fn decide_tally(config: Config, t: Tally) -> (usize, Outcome) {
    let n = t.total();
    let Tally {
        pending,
        running,
        succeeded,
        failed,
    } = t;
    let none = |outcome| (0, outcome);
    if n == 0 {
        return none(Outcome::Failed("the deployment has no target hosts".into()));
    }
    let limits = match limits(config, n) {
        Ok(l) => l,
        Err(why) => return none(Outcome::Failed(why)),
    };
    let could_succeed = n - failed;
    if could_succeed < limits.success_min {
        return none(Outcome::Failed(format!(
            "{failed} of {n} hosts failed: fewer than the {} needed can succeed",
            limits.success_min
        )));
    }
    if pending > 0 && could_succeed <= limits.min_healthy {
        return none(Outcome::Failed(format!(
            "{failed} of {n} hosts failed: the minimum of {} healthy hosts cannot be held \
             while deploying to the {pending} remaining",
            limits.min_healthy
        )));
    }
    if pending == 0 && running == 0 {
        return none(if succeeded >= limits.success_min {
            Outcome::Succeeded
        } else {
            Outcome::Failed(format!(
                "{succeeded} of {n} hosts succeeded, fewer than the {} needed",
                limits.success_min
            ))
        });
    }
    let healthy = pending + succeeded;
    let room = healthy.saturating_sub(limits.min_healthy).min(pending);
    (room, Outcome::Running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::*;

    const CONFIGS: [Config; 7] = [
        Config::AllAtOnce,
        Config::HalfAtATime,
        Config::OneAtATime,
        Config::MinHealthyHosts(1),
        Config::MinHealthyHosts(6),
        Config::MinHealthyPercent(50),
        Config::MinHealthyPercent(85),
    ];
    const SIZES: [usize; 5] = [1, 2, 3, 10, 101];

    #[derive(Debug, Clone, Copy)]
    enum Pattern {
        NoFailure,
        FirstFails,
        LastFails,
        AllFail,
        EveryThirdFails,
    }
    const PATTERNS: [Pattern; 5] = [
        Pattern::NoFailure,
        Pattern::FirstFails,
        Pattern::LastFails,
        Pattern::AllFail,
        Pattern::EveryThirdFails,
    ];

    impl Pattern {
        fn fails(self, i: usize, n: usize) -> bool {
            match self {
                Pattern::NoFailure => false,
                Pattern::FirstFails => i == 0,
                Pattern::LastFails => i == n - 1,
                Pattern::AllFail => true,
                Pattern::EveryThirdFails => i.is_multiple_of(3),
            }
        }
    }

    struct Run {
        outcome: Outcome,
        started: usize,
        max_running: usize,
    }

    /// Drives a deployment to its end: start what `decide` says, then finish the oldest
    /// running host (failing it when the pattern says so), and repeat.
    fn simulate(config: Config, n: usize, pattern: Pattern) -> Run {
        let mut hosts = vec![Pending; n];
        let (mut started, mut max_running) = (0, 0);
        let mut order = Vec::new();
        for _ in 0..(3 * n + 3) {
            let d = decide(config, &hosts);
            for &i in &d.start {
                assert_eq!(hosts[i], Pending, "{config} n={n}: started twice");
                hosts[i] = InProgress;
                order.push(i);
                started += 1;
            }
            let running = hosts.iter().filter(|h| **h == InProgress).count();
            max_running = max_running.max(running);
            if d.outcome != Outcome::Running {
                assert!(
                    d.start.is_empty(),
                    "{config}: started hosts in a final decision"
                );
                return Run {
                    outcome: d.outcome,
                    started,
                    max_running,
                };
            }
            let next = order.iter().copied().find(|&i| hosts[i] == InProgress);
            let Some(i) = next else {
                panic!("{config} n={n} {pattern:?}: stuck with nothing running: {hosts:?}");
            };
            hosts[i] = if pattern.fails(i, n) {
                Failed
            } else {
                Succeeded
            };
        }
        panic!("{config} n={n} {pattern:?}: did not end");
    }

    fn batch(config: Config, n: usize) -> Option<usize> {
        limits(config, n).ok().map(|l| n - l.min_healthy)
    }

    #[test]
    fn every_size_config_and_failure_pattern_keeps_the_rules() {
        let mut cases = 0;
        for n in SIZES {
            for config in CONFIGS {
                for pattern in PATTERNS {
                    cases += 1;
                    let run = simulate(config, n, pattern);
                    let ctx = format!("{config} n={n} {pattern:?}");
                    match batch(config, n) {
                        None => {
                            assert!(matches!(run.outcome, Outcome::Failed(_)), "{ctx}");
                            assert_eq!(run.started, 0, "{ctx}");
                            continue;
                        }
                        Some(b) => {
                            assert!(b >= 1, "{ctx}: batch {b}");
                            assert!(run.max_running <= b, "{ctx}: {} > {b}", run.max_running);
                        }
                    }
                    match pattern {
                        Pattern::NoFailure => {
                            assert_eq!(run.outcome, Outcome::Succeeded, "{ctx}");
                            assert_eq!(run.started, n, "{ctx}");
                        }
                        Pattern::AllFail => {
                            assert!(matches!(run.outcome, Outcome::Failed(_)), "{ctx}");
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(cases, SIZES.len() * CONFIGS.len() * PATTERNS.len());
    }

    #[test]
    fn outcomes_match_codedeploy() {
        use Config::*;
        use Pattern::*;
        // (config, hosts, pattern, succeeds, hosts started, most running at once)
        let table: &[(Config, usize, Pattern, bool, usize, usize)] = &[
            (AllAtOnce, 1, NoFailure, true, 1, 1),
            (AllAtOnce, 10, NoFailure, true, 10, 10),
            (AllAtOnce, 10, EveryThirdFails, true, 10, 10),
            (AllAtOnce, 3, AllFail, false, 3, 3),
            (AllAtOnce, 1, AllFail, false, 1, 1),
            (OneAtATime, 1, NoFailure, true, 1, 1),
            (OneAtATime, 1, AllFail, false, 1, 1),
            (OneAtATime, 2, FirstFails, false, 1, 1),
            (OneAtATime, 2, LastFails, true, 2, 1),
            (OneAtATime, 3, FirstFails, false, 1, 1),
            (OneAtATime, 3, LastFails, true, 3, 1),
            (OneAtATime, 10, FirstFails, false, 1, 1),
            (OneAtATime, 10, LastFails, true, 10, 1),
            (OneAtATime, 101, LastFails, true, 101, 1),
            (OneAtATime, 101, EveryThirdFails, false, 1, 1),
            (HalfAtATime, 1, NoFailure, true, 1, 1),
            (HalfAtATime, 1, AllFail, false, 1, 1),
            (HalfAtATime, 2, FirstFails, false, 1, 1),
            (HalfAtATime, 2, LastFails, true, 2, 1),
            (HalfAtATime, 3, NoFailure, true, 3, 1),
            (HalfAtATime, 10, NoFailure, true, 10, 5),
            (HalfAtATime, 10, FirstFails, true, 10, 5),
            (HalfAtATime, 10, EveryThirdFails, true, 10, 5),
            (HalfAtATime, 101, NoFailure, true, 101, 50),
            (HalfAtATime, 101, AllFail, false, 50, 50),
            (MinHealthyPercent(50), 10, NoFailure, true, 10, 5),
            (MinHealthyPercent(50), 10, AllFail, false, 5, 5),
            // CodeDeploy's example: 85% of 10 fails on a single failed host.
            (MinHealthyPercent(85), 10, FirstFails, false, 1, 1),
            (MinHealthyPercent(85), 10, LastFails, true, 10, 1),
            (MinHealthyPercent(85), 10, NoFailure, true, 10, 1),
            // CodeDeploy's example: HOST_COUNT 6 of 9 deploys to up to 3 at a time.
            (MinHealthyHosts(6), 9, NoFailure, true, 9, 3),
            (MinHealthyHosts(6), 9, FirstFails, true, 9, 3),
            (MinHealthyHosts(6), 3, NoFailure, false, 0, 0),
            (MinHealthyHosts(1), 1, NoFailure, false, 0, 0),
            (MinHealthyHosts(1), 2, FirstFails, false, 1, 1),
            (MinHealthyHosts(1), 2, LastFails, true, 2, 1),
            (MinHealthyPercent(100), 4, NoFailure, false, 0, 0),
            (MinHealthyPercent(0), 4, NoFailure, true, 4, 4),
        ];
        for &(config, n, pattern, succeeds, started, max_running) in table {
            let run = simulate(config, n, pattern);
            let ctx = format!("{config} n={n} {pattern:?}: {:?}", run.outcome);
            assert_eq!(run.outcome == Outcome::Succeeded, succeeds, "{ctx}");
            assert_eq!(run.started, started, "{ctx}: started");
            assert_eq!(run.max_running, max_running, "{ctx}: max running");
        }
    }

    #[test]
    fn no_targets_fails_and_nothing_pending_with_running_waits() {
        assert!(matches!(
            decide(Config::AllAtOnce, &[]).outcome,
            Outcome::Failed(_)
        ));
        let d = decide(Config::OneAtATime, &[Succeeded, InProgress]);
        assert_eq!(
            d,
            Decision {
                start: vec![],
                outcome: Outcome::Running
            }
        );
    }

    #[test]
    fn failure_message_names_the_counts() {
        let d = decide(Config::OneAtATime, &[Failed, Pending, Pending]);
        match d.outcome {
            Outcome::Failed(m) => assert!(m.contains("1 of 3 hosts failed"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
