//! The store suite's cases of operator tokens, dashboard sessions and the fleet's figures.

use hoist_protocol::operator::{CommandState, DeploymentState, Role};

use super::cases::{app, command_row, deployment_row, group_row};
use crate::store::{OperatorTokenRow, SessionRow, Store};

fn token(
    id: &str,
    hash: &str,
    role: Role,
    name: Option<&str>,
    created_ms: u64,
) -> OperatorTokenRow {
    OperatorTokenRow {
        id: id.into(),
        token_sha256: hash.into(),
        role,
        name: name.map(Into::into),
        created_ms,
        revoked: false,
    }
}

pub(in crate::store::tests) fn operator_tokens_keep_their_role_and_name_and_revocation_sticks(
    s: &dyn Store,
) {
    s.insert_operator_token(&token("op-2", "h2", Role::Viewer, None, 20))
        .unwrap();
    s.insert_operator_token(&token("op-1", "h1", Role::Deployer, Some("dana"), 10))
        .unwrap();
    let dup = s.insert_operator_token(&token("op-3", "h1", Role::Admin, None, 30));
    assert!(dup.is_err(), "one hash, one token: {dup:?}");
    let found = s.operator_token("h1").unwrap().unwrap();
    assert_eq!(found, token("op-1", "h1", Role::Deployer, Some("dana"), 10));
    assert!(s.operator_token("nope").unwrap().is_none());
    let ids: Vec<String> = s
        .operator_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["op-1", "op-2"], "oldest first");
    let revoked = s.revoke_operator_token("op-2").unwrap().unwrap();
    assert!(revoked.revoked);
    assert!(s.operator_token("h2").unwrap().unwrap().revoked);
    assert!(s.revoke_operator_token("op-9").unwrap().is_none());
}

pub(in crate::store::tests) fn sessions_are_found_deleted_and_expired_ones_dropped_on_insert(
    s: &dyn Store,
) {
    let session = |id: &str, expires_ms| SessionRow {
        session_sha256: id.into(),
        token_sha256: "tok".into(),
        created_ms: 1,
        expires_ms,
    };
    s.insert_session(&session("old", 100), 50).unwrap();
    s.insert_session(&session("new", 1_000), 50).unwrap();
    assert_eq!(s.session("old").unwrap(), Some(session("old", 100)));
    // A later insert drops the sessions expired by then.
    s.insert_session(&session("newer", 2_000), 500).unwrap();
    assert!(s.session("old").unwrap().is_none());
    assert!(s.session("new").unwrap().is_some());
    s.delete_session("new").unwrap();
    s.delete_session("never-was").unwrap();
    assert!(s.session("new").unwrap().is_none());
    assert!(s.session("newer").unwrap().is_some());
}

pub(in crate::store::tests) fn figures_count_deployments_and_the_commands_of_active_ones(
    s: &dyn Store,
) {
    app(s, "shop");
    let g = group_row("g1", "shop", "web");
    s.insert_group(&g).unwrap();
    let mut done = deployment_row("d1", &g, 1);
    done.state = DeploymentState::Succeeded;
    let mut c = command_row("c1", "d1", "h1", 0);
    c.state = CommandState::Succeeded;
    s.insert_deployment(&done, &[c]).unwrap();
    let mut live = deployment_row("d2", &g, 2);
    live.state = DeploymentState::InProgress;
    let mut running = command_row("c2", "d2", "h1", 0);
    running.state = CommandState::InProgress;
    let pending = command_row("c3", "d2", "h2", 1);
    s.insert_deployment(&live, &[running, pending]).unwrap();
    let mut d = s.deployment_state_counts().unwrap();
    d.sort_by_key(|(state, _)| format!("{state:?}"));
    assert_eq!(
        d,
        [
            (DeploymentState::InProgress, 1),
            (DeploymentState::Succeeded, 1)
        ]
    );
    let mut c = s.active_command_state_counts().unwrap();
    c.sort_by_key(|(state, _)| format!("{state:?}"));
    assert_eq!(
        c,
        [(CommandState::InProgress, 1), (CommandState::Pending, 1)]
    );
}
