//! The store suite's cases of what is read at once for many: a batch of event reports'
//! commands and which of its reports are recorded already, and the commands in progress
//! of the hosts whose polls a replica holds. Not here: writing them (`cases`).

use hoist_protocol::operator::CommandState;

use super::cases::{command_row, deployed, deployment_row, report_row};
use crate::store::Store;

pub(in crate::store::tests) fn a_batch_reads_its_commands_and_recorded_reports_at_once(
    s: &dyn Store,
) {
    let (_g, _d, commands) = deployed(s, 3);
    let mut c1 = commands[1].clone();
    c1.state = CommandState::InProgress;
    assert_eq!(
        s.insert_reports(&[
            (report_row("c-1", 1), c1.clone()),
            (report_row("c-1", 2), c1.clone()),
        ])
        .unwrap(),
        [true, true]
    );

    let mut found = s.commands_among(&["c-2", "c-1", "c-9"]).unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found, [c1.clone(), commands[2].clone()]);
    assert_eq!(s.commands_among(&[]).unwrap(), []);

    // The same command id twice, one key recorded, others not (another seq, another
    // command, one that does not exist).
    let mut recorded = s
        .reports_among(&[("c-1", 2), ("c-1", 3), ("c-0", 1), ("c-9", 1), ("c-1", 1)])
        .unwrap();
    recorded.sort_by_key(|r| r.seq);
    assert_eq!(recorded, [report_row("c-1", 1), report_row("c-1", 2)]);
    assert_eq!(s.reports_among(&[]).unwrap(), []);
}

pub(in crate::store::tests) fn hosts_commands_in_progress_are_read_at_once(s: &dyn Store) {
    let (g, d, commands) = deployed(s, 3);
    // h-0: two commands in progress (the older one is its answer); h-1: pending only;
    // h-2: one in progress.
    let mut older = commands[0].clone();
    older.state = CommandState::InProgress;
    older.started_ms = Some(10);
    let mut c2 = commands[2].clone();
    c2.state = CommandState::InProgress;
    c2.started_ms = Some(30);
    s.save_deployment(&d, &[older.clone(), c2.clone()]).unwrap();
    let mut newer = command_row("c-0b", "d-2", "h-0", 0);
    newer.state = CommandState::InProgress;
    newer.started_ms = Some(20);
    s.insert_deployment(&deployment_row("d-2", &g, 2000), &[newer])
        .unwrap();

    let mut found = s
        .in_progress_commands_for_hosts(&["h-0", "h-1", "h-2", "h-9"])
        .unwrap();
    found.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    assert_eq!(found, [older, c2]);
    assert_eq!(s.in_progress_commands_for_hosts(&[]).unwrap(), []);
}
