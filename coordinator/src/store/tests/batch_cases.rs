//! The store suite's cases of what is read or written at once for many: a batch of event
//! reports' commands and which of its reports are recorded already, the commands in
//! progress of the hosts whose polls a replica holds, the sync rows of the commands a batch
//! ends, and a fleet's commands, reports and sync rows written together (a row listed
//! twice). Not here: the single rows (`cases`).

use hoist_protocol::operator::{CommandState, HostEvent};

use super::cases::{command_row, deployed, deployment_row, report_row};
use crate::store::{CommandRow, HostSyncRow, Store};

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

pub(in crate::store::tests) fn hosts_sync_rows_are_read_at_once(s: &dyn Store) {
    let a = HostSyncRow::new("h-1", "g-1", 1);
    let b = HostSyncRow::new("h-1", "g-2", 2);
    let c = HostSyncRow::new("h-2", "g-1", 3);
    s.save_host_syncs(&[a.clone(), b.clone(), c.clone()])
        .unwrap();
    // A key twice, a host in a group it has no row in, a host with none.
    let mut found = s
        .host_syncs_among(&[
            ("h-2", "g-1"),
            ("h-1", "g-1"),
            ("h-2", "g-2"),
            ("h-9", "g-1"),
            ("h-1", "g-1"),
        ])
        .unwrap();
    found.sort_by(|x, y| (&x.host_id, &x.group_id).cmp(&(&y.host_id, &y.group_id)));
    found.dedup();
    assert_eq!(found, [a, c]);
    assert_eq!(s.host_syncs_among(&[]).unwrap(), []);
}

pub(in crate::store::tests) fn a_fleets_rows_are_written_together_in_order(s: &dyn Store) {
    let (g, _d, _commands) = deployed(s, 1);
    let d = deployment_row("d-2", &g, 2000);
    let mut commands: Vec<_> = (0..3000u32)
        .map(|n| command_row(&format!("c2-{n:04}"), "d-2", &format!("h-{n}"), n))
        .collect();
    for c in commands.iter_mut().step_by(7) {
        c.state = CommandState::InProgress;
        c.started_ms = Some(2000);
        c.current_event = Some("Install".into());
        c.events = vec![HostEvent {
            event: "Install".into(),
            status: "started".into(),
            duration_ms: None,
        }];
        c.exit_code = Some(-1);
        c.message = Some("it's \"quoted\", {braced}, NULL".into());
    }
    s.insert_deployment(&d, &commands).unwrap();
    assert_eq!(s.commands("d-2").unwrap(), commands);
    assert_eq!(s.command_total("d-2").unwrap(), 3000);
    // Inserted in the order given: of two commands of one host started at once, the
    // first listed is its answer.
    let mut first = command_row("c3-a", "d-3", "h-x", 0);
    first.state = CommandState::InProgress;
    let second = CommandRow {
        id: "c3-b".into(),
        position: 1,
        ..first.clone()
    };
    s.insert_deployment(&deployment_row("d-3", &g, 3000), &[first, second])
        .unwrap();
    assert_eq!(
        s.in_progress_command_for_host("h-x").unwrap().map(|c| c.id),
        Some("c3-a".into())
    );

    // Every command updated at once; one listed twice keeps its last row.
    let mut stale = commands[5].clone();
    stale.message = Some("overwritten in the same write".into());
    for c in &mut commands {
        c.state = CommandState::Succeeded;
        c.ended_ms = Some(3000);
        c.log_tail = Some("done".into());
    }
    let mut written = vec![stale];
    written.extend(commands.iter().cloned());
    s.save_deployment(&d, &written).unwrap();
    assert_eq!(s.commands("d-2").unwrap(), commands);

    // A batch with one key twice records it once, by its first row; the command keeps
    // the last recorded row.
    let c = |message: &str| CommandRow {
        message: Some(message.into()),
        ..commands[0].clone()
    };
    let recorded = s
        .insert_reports(&[
            (report_row("c2-0000", 1), c("first")),
            (report_row("c2-0000", 1), c("a resend")),
            (report_row("c2-0000", 2), c("second")),
        ])
        .unwrap();
    assert_eq!(recorded, [true, false, true]);
    assert_eq!(s.command("c2-0000").unwrap(), Some(c("second")));
    assert_eq!(s.reports("c2-0000").unwrap().len(), 2);
    assert_eq!(s.insert_reports(&[]).unwrap(), Vec::<bool>::new());

    // Sync rows for a fleet, one host listed twice: its last row stays.
    let mut syncs: Vec<_> = (0..3000)
        .map(|n| HostSyncRow::new(&format!("h-{n}"), &g.id, 5))
        .collect();
    let mut later = syncs[3].clone();
    later.hold = true;
    later.attempts = 2;
    later.deployment_id = Some("d-2".into());
    syncs.push(later.clone());
    s.save_host_syncs(&syncs).unwrap();
    assert_eq!(s.host_syncs().unwrap().len(), 3000);
    assert_eq!(s.host_sync("h-3", &g.id).unwrap(), Some(later));
    assert_eq!(s.host_sync("h-4", &g.id).unwrap(), Some(syncs[4].clone()));
}
