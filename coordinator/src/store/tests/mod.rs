//! One test suite for every [`Store`] backend: each case is a function of a store, run
//! against SQLite (in memory) and against PostgreSQL (a fresh database of the test binary's
//! cluster, `hoist_tests::postgres`). Backend-specific behaviour (migrations, several
//! connections at once) is tested beside it (`postgres.rs`) and in `sqlite`.

mod batch_cases;
mod cases;
mod operator_cases;
mod pipeline_cases;
mod postgres;
mod webhook_cases;

use std::sync::OnceLock;

use super::postgres::DatabaseUrl;
use super::{PgStore, SqliteStore, Store};

/// The runtime PostgreSQL stores of this test binary run their queries on (tests call the
/// blocking store from plain threads, as the service does from `spawn_blocking`).
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn on_sqlite() -> Box<dyn Store> {
    Box::new(SqliteStore::in_memory().unwrap())
}

/// A store on a new database, and the database (for a second store on it).
fn on_postgres() -> (Box<dyn Store>, hoist_tests::postgres::TestDatabase) {
    let db = hoist_tests::postgres::database();
    (Box::new(pg_store(&db.url)), db)
}

fn pg_store(url: &str) -> PgStore {
    PgStore::open(
        &DatabaseUrl::parse(url).unwrap(),
        runtime().handle().clone(),
    )
    .unwrap()
}

/// `suite!(case, ...)`: for each case, one test per backend, `sqlite::case` and
/// `postgres::case` (the latter needs a PostgreSQL installation).
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&*super::on_sqlite());
                }
            )*
        }
        mod pg {
            $(
                #[test]
                #[ignore = "needs postgresql"]
                fn $case() {
                    super::cases::$case(&*super::on_postgres().0);
                }
            )*
        }
    };
}

suite!(
    applications_are_unique_and_listed_by_name,
    groups_are_unique_per_application_and_keep_their_options,
    registration_counts_a_use_and_revocation_sticks,
    hosts_never_move_their_last_contact_back,
    a_poll_request_equal_to_what_is_set_is_cleared,
    deployments_list_newest_first_and_filter_by_application,
    a_decision_writes_its_rows_together,
    commands_are_read_by_state_in_rollout_order,
    a_report_is_recorded_once_per_command_and_seq,
    a_batch_reads_its_commands_and_recorded_reports_at_once,
    hosts_commands_in_progress_are_read_at_once,
    hosts_sync_rows_are_read_at_once,
    a_fleets_rows_are_written_together_in_order,
    sync_rows_are_replaced,
    leases_merge_and_are_forgotten_when_their_command_ends,
    replicas_are_listed_while_they_beat_and_forgotten_when_removed,
    pipelines_are_replaced_by_name_listed_and_deleted,
    a_source_release_and_the_source_standing_are_written_together,
    releases_are_saved_with_their_stages_and_listed_in_order,
    a_deployment_keeps_its_variables_and_release,
    operator_tokens_keep_their_role_and_name_and_revocation_sticks,
    sessions_are_found_deleted_and_expired_ones_dropped_on_insert,
    figures_count_deployments_and_the_commands_of_active_ones,
    a_state_change_queues_one_event_per_subscribed_webhook,
    a_release_state_change_is_an_event_of_its_application,
    deliveries_are_claimed_once_in_order_per_subject,
    ended_deliveries_are_pruned_and_a_deleted_webhook_takes_its_own,
    a_revision_and_its_deployment_keep_their_signature,
);
