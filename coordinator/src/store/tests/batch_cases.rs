//! The store suite's cases of what a batch of event reports reads at once: its commands
//! and which of its reports are recorded already. Not here: writing reports (`cases`).

use hoist_protocol::operator::CommandState;

use super::cases::{deployed, report_row};
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
