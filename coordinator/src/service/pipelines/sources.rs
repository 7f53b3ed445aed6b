//! The rules of pipeline sources: which are due a look, and what a look's outcome does —
//! a new commit or object version becomes a release (and the source's new standing is
//! written in the release's transaction, so a restart never makes it twice), a failure is
//! recorded and the next look backs off, nothing new only moves the next look.
//!
//! Deliberately not here: the looking itself (`crate::sources`: `git ls-remote`, S3 reads),
//! which runs outside the store lock.

use hoist_protocol::agent::Revision;
use hoist_protocol::operator::{PipelineSource, SourceStatus};

use super::NewRelease;
use crate::service::{now_ms, Result, Service};

/// Longest wait between two looks at a failing source.
const MAX_BACKOFF_SECS: u64 = 900;

/// What one look at a source found.
#[derive(Debug, Clone)]
pub enum Look {
    /// What the source points at now: a commit, or an object version or ETag, with the
    /// revision to release if it is new (for S3, already copied into the bundle store).
    Found {
        reference: String,
        revision: Revision,
    },
    /// The same as the last release; nothing was fetched.
    Unchanged,
    Failed(String),
}

/// A source due a look.
#[derive(Debug, Clone)]
pub struct Due {
    pub pipeline: String,
    pub source: PipelineSource,
    /// The last commit or version released, so a look can skip fetching it again.
    pub last: Option<String>,
}

/// The wait after `failures` failed looks in a row: the poll interval doubled for each,
/// at most a quarter of an hour (and never less than the poll interval).
pub fn backoff_secs(poll_secs: u64, failures: u32) -> u64 {
    let doubled = poll_secs.saturating_mul(1u64 << failures.min(16));
    doubled.min(MAX_BACKOFF_SECS.max(poll_secs))
}

impl Service {
    /// Pipelines whose source is due a look at `now` (ms).
    pub fn due_sources(&self, now: u64) -> Result<Vec<Due>> {
        Ok(self
            .store
            .pipelines(None)?
            .into_iter()
            .filter(|p| p.source_status.next_ms <= now)
            .filter_map(|p| {
                Some(Due {
                    source: p.source?,
                    pipeline: p.name,
                    last: p.source_status.last,
                })
            })
            .collect())
    }

    /// Records what a look at `due` found, under the lock, deciding again from the store:
    /// a pipeline applied since with another source, or whose source made a release since
    /// `due` was read, ignores the look.
    pub fn source_looked(&self, due: &Due, look: Look) -> Result<()> {
        let now = now_ms();
        {
            let lock = self.lock()?;
            let Some(p) = self.store.pipeline(&due.pipeline)? else {
                return Ok(());
            };
            if p.source.as_ref() != Some(&due.source) {
                return Ok(());
            }
            // Another replica recorded a release since this look started (each replica's
            // watcher looks on its own): this look may have found that commit, or an older
            // one, so it decides nothing; the next look starts from the new standing.
            if p.source_status.last != due.last {
                return Ok(());
            }
            let poll = due.source.poll_secs();
            let mut status = p.source_status.clone();
            status.checked_ms = Some(now);
            match look {
                Look::Failed(why) => {
                    status.failures = status.failures.saturating_add(1);
                    let wait = backoff_secs(poll, status.failures);
                    status.next_ms = now.saturating_add(wait.saturating_mul(1000));
                    tracing::warn!(pipeline = %p.name, source = %due.source.describe(),
                        error = %why, retry_secs = wait, "pipeline source unreachable");
                    status.error = Some(why);
                    self.store.save_source_status(&p.name, &status)?;
                }
                Look::Found { reference, .. } if status.last.as_deref() == Some(&reference) => {
                    self.unchanged(&p.name, status, poll, now)?;
                }
                Look::Unchanged => self.unchanged(&p.name, status, poll, now)?,
                Look::Found {
                    reference,
                    revision,
                } => {
                    status.failures = 0;
                    status.error = None;
                    status.next_ms = now.saturating_add(poll.saturating_mul(1000));
                    status.last = Some(reference.clone());
                    let info = self.create_revision(&p.application, revision, None)?;
                    let creator = match due.source {
                        PipelineSource::Git { .. } => "git",
                        PipelineSource::S3 { .. } => "s3",
                    };
                    let new = NewRelease {
                        revision_id: info.id,
                        revision: info.revision,
                        creator,
                        source_ref: Some(reference),
                    };
                    self.make_release(&lock, &p, new, Some(&status))?;
                }
            }
        }
        self.changed();
        Ok(())
    }

    fn unchanged(&self, name: &str, mut status: SourceStatus, poll: u64, now: u64) -> Result<()> {
        status.failures = 0;
        status.error = None;
        status.next_ms = now.saturating_add(poll.saturating_mul(1000));
        Ok(self.store.save_source_status(name, &status)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hoist_protocol::operator::RolloutConfig;

    use super::*;
    use crate::bundles::BundleStore;
    use crate::service::ServiceConfig;
    use crate::store::{AppRow, GroupRow, PipelineRow, PipelineStageRow, SqliteStore, Store};

    fn found(commit: char) -> Look {
        let commit = commit.to_string().repeat(40);
        Look::Found {
            reference: commit.clone(),
            revision: Revision::Git {
                repository: "git://127.0.0.1:1/shop.git".into(),
                commit,
            },
        }
    }

    /// Two replicas' watchers look at one source on their own. A look that started before
    /// the other replica released a newer commit decides nothing, so the commit it found
    /// (the same or an older one) is not released a second time.
    #[test]
    fn a_look_overtaken_by_another_replicas_release_decides_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        store
            .insert_application(&AppRow {
                name: "shop".into(),
                created_ms: 1,
            })
            .unwrap();
        store
            .insert_group(&GroupRow {
                id: "g-1".into(),
                application: "shop".into(),
                name: "staging".into(),
                tag_filters: vec![BTreeMap::from([("env".into(), "staging".into())])],
                rollout: RolloutConfig::AllAtOnce,
                auto_rollback: false,
                created_ms: 1,
                catch_up: true,
                bake_secs: 0,
                target_deployment_id: None,
            })
            .unwrap();
        store
            .save_pipeline(&PipelineRow {
                name: "shop-release".into(),
                application: "shop".into(),
                source: Some(PipelineSource::Git {
                    url: "git://127.0.0.1:1/shop.git".into(),
                    branch: "main".into(),
                    poll_secs: 1,
                }),
                stages: vec![PipelineStageRow {
                    group: "staging".into(),
                    manual_approval: false,
                    variables: BTreeMap::new(),
                }],
                created_ms: 1,
                updated_ms: 1,
                source_status: SourceStatus::default(),
            })
            .unwrap();
        let service = Service::new(
            store.clone(),
            BundleStore::open(tmp.path()).unwrap(),
            ServiceConfig::default(),
        );
        let refs = || -> Vec<Option<String>> {
            let mut r: Vec<_> = store
                .releases(None, 10)
                .unwrap()
                .into_iter()
                .map(|r| r.source_ref)
                .collect();
            r.sort();
            r
        };
        let c = |ch: char| Some(ch.to_string().repeat(40));

        // Both replicas find the source due, before either has released anything.
        let due_a = service.due_sources(u64::MAX).unwrap().remove(0);
        let due_b = due_a.clone();
        service.source_looked(&due_a, found('a')).unwrap();
        assert_eq!(refs(), [c('a')]);
        // Replica A looks again and releases the next commit.
        let due_a = service.due_sources(u64::MAX).unwrap().remove(0);
        service.source_looked(&due_a, found('b')).unwrap();
        assert_eq!(refs(), [c('a'), c('b')]);
        // Replica B's slow first look ends now, with the first commit.
        service.source_looked(&due_b, found('a')).unwrap();
        assert_eq!(refs(), [c('a'), c('b')], "no commit released twice");
        assert_eq!(
            store
                .pipeline("shop-release")
                .unwrap()
                .unwrap()
                .source_status
                .last,
            c('b'),
            "the source stays at the newest release"
        );
    }

    #[test]
    fn a_failing_source_backs_off_doubling_up_to_a_cap() {
        // (poll, failures) -> wait
        for (poll, failures, wait) in [
            (30, 0, 30),
            (30, 1, 60),
            (30, 3, 240),
            (30, 5, 900),
            (30, 60, 900),
            (3600, 2, 3600),
            (1, 4, 16),
        ] {
            assert_eq!(
                backoff_secs(poll, failures),
                wait,
                "{poll} s, {failures} failures"
            );
        }
    }
}
