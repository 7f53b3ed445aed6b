//! The dashboard's deployment and host pages and their buttons: the deployments list
//! (per-state counts and bar, filtered by application and group), one deployment (each
//! host's state, event, script, exit code and log tail; rollout and bake; stop), the hosts
//! (tags, tag changes waiting with accept, contact, agent version, per-group revision and
//! sync state, retry). Each reads the service's views, the same the JSON API answers. Not
//! here: applications and pipelines (`fleet`), sign-in (`session`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use hoist_protocol::operator::{Deployment, SetHostTags, SyncState};
use maud::{html, Markup};

use super::session::Session;
use super::view::{badge, button, counts, page, text, time, Page};
use super::DashError;
use crate::api::{blocking, AppState};

/// At most this many deployments are listed.
const LIST_LIMIT: usize = 100;

pub(super) async fn deployments(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, DashError> {
    let app = q.get("application").filter(|s| !s.is_empty()).cloned();
    let group = q.get("group").filter(|s| !s.is_empty()).cloned();
    let looked = app.clone();
    let list = blocking(&state, move |e| e.deployments(looked.as_deref())).await?;
    let shown: Vec<&Deployment> = list
        .deployments
        .iter()
        .filter(|d| group.as_ref().is_none_or(|g| &d.deployment_group == g))
        .take(LIST_LIMIT)
        .collect();
    let body = html! {
        h1 { "Deployments" }
        form.filter method="get" action="/deployments" {
            label { "Application " input type="text" name="application" value=[app.as_deref()]; }
            label { "Group " input type="text" name="group" value=[group.as_deref()]; }
            button type="submit" { "Filter" }
        }
        table #deployments {
            thead { tr { th { "Deployment" } th { "Application" } th { "Group" } th { "State" } th { "Hosts" } th { "Created" } th { "By" } } }
            tbody {
                @for d in &shown {
                    tr data-state=(d.state.as_str()) {
                        td { a href={ "/deployments/" (d.id) } { (d.id) } }
                        td { (text(&d.application)) }
                        td { (text(&d.deployment_group)) }
                        td { (badge(d.state.as_str())) }
                        td { (counts(&d.counts)) }
                        td { (time(Some(d.created_ms))) }
                        td { (d.creator.as_str()) }
                    }
                }
            }
        }
        @if shown.is_empty() { p.empty { "No deployments." } }
    };
    Ok(page(Page::Deployments, Some(&session), body).into_response())
}

pub(super) async fn deployment(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let d = blocking(&state, move |e| e.deployment(&id)).await?;
    let may_stop = !d.state.is_terminal() && session.may_post("/deployments/{id}/stop");
    let body = html! {
        h1 { "Deployment " (d.id) }
        dl.facts {
            dt { "State" } dd #state { (badge(d.state.as_str())) }
            dt { "Application" } dd { (text(&d.application)) }
            dt { "Group" } dd { (text(&d.deployment_group)) }
            dt { "Revision" } dd { (text(&d.revision.describe())) }
            dt { "Rollout" } dd { (d.rollout.to_string()) }
            dt { "Batch" } dd #batch {
                (d.counts.in_progress) " running, " (d.counts.pending) " waiting"
            }
            dt { "Bake" } dd {
                (d.bake_secs) " s"
                @if let Some(until) = d.baking_until_ms { " · baking until " (time(Some(until))) }
            }
            dt { "Created" } dd { (time(Some(d.created_ms))) " by " (d.creator.as_str()) }
            dt { "Ended" } dd { (time(d.ended_ms)) }
            @if let Some(r) = &d.release_id { dt { "Release" } dd { a href={ "/releases/" (r) } { (r) } } }
            @if let Some(m) = &d.message { dt { "Message" } dd { (text(m)) } }
        }
        (counts(&d.counts))
        @if may_stop { (button(&session, &format!("/deployments/{}/stop", d.id), "Stop deployment", "danger")) }
        h2 { "Hosts" }
        @for h in &d.hosts {
            section.host data-host=(h.host_name) data-state=(h.state.as_str()) {
                h3 { (text(&h.host_name)) " " (badge(h.state.as_str())) }
                dl.facts {
                    @if let Some(e) = &h.current_event { dt { "Current event" } dd { (text(e)) } }
                    @if let Some(e) = &h.failed_event { dt { "Failed event" } dd.failed-event { (text(e)) } }
                    @if let Some(s) = &h.script { dt { "Script" } dd { (text(s)) } }
                    @if let Some(c) = h.exit_code { dt { "Exit code" } dd.exit-code { (c) } }
                    @if let Some(c) = &h.error_code { dt { "Error" } dd { (text(c)) } }
                    @if let Some(m) = &h.message { dt { "Message" } dd { (text(m)) } }
                    dt { "Started" } dd { (time(h.started_ms)) }
                    dt { "Ended" } dd { (time(h.ended_ms)) }
                }
                @if !h.events.is_empty() {
                    ol.events {
                        @for ev in &h.events { li { (text(&ev.event)) " " (badge(&ev.status)) } }
                    }
                }
                @if let Some(log) = &h.log_tail {
                    details open[h.failed_event.is_some()] {
                        summary { "Log tail" }
                        pre.log { (log) }
                    }
                }
            }
        }
    };
    Ok(page(Page::Deployments, Some(&session), body).into_response())
}

pub(super) async fn stop(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    session.form(&body)?;
    let d = blocking(&state, move |e| e.stop_deployment(&id)).await?;
    Ok(Redirect::to(&format!("/deployments/{}", d.id)).into_response())
}

fn tags(t: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @for (k, v) in t { span.tag { (text(k)) "=" (text(v)) } " " }
    }
}

pub(super) async fn hosts(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, DashError> {
    let list = blocking(&state, |e| e.hosts()).await?;
    let may_accept = session.may_post("/hosts/{id}/accept");
    let may_retry = session.may_post("/hosts/{id}/retry");
    let body = html! {
        h1 { "Hosts" }
        table #hosts {
            thead { tr { th { "Host" } th { "Tags" } th { "Contact" } th { "Last contact" } th { "Agent" } th { "Groups" } } }
            tbody {
                @for h in &list.hosts {
                    tr data-host=(h.name) {
                        td { (text(&h.name)) br; small { (h.id) } }
                        td {
                            (tags(&h.tags))
                            @if h.requested_tags.is_some() || h.requested_name.is_some() {
                                div.pending {
                                    "waiting: "
                                    @if let Some(n) = &h.requested_name { "name " (text(n)) " " }
                                    @if let Some(t) = &h.requested_tags { (tags(t)) }
                                    @if may_accept { (button(&session, &format!("/hosts/{}/accept", h.id), "Accept", "")) }
                                }
                            }
                        }
                        td { @if h.revoked { (badge("revoked")) } @else if h.online { (badge("online")) } @else { (badge("lost")) } }
                        td { (time(Some(h.last_seen_ms))) }
                        td { (text(&h.agent_version)) }
                        td {
                            @for g in &h.groups {
                                div.group {
                                    (text(&g.application)) "/" (text(&g.deployment_group)) " "
                                    (badge(g.sync.as_str())) " "
                                    @if let Some(r) = &g.revision { small { (text(&r.describe())) } }
                                    @if let Some(e) = &g.error { " " small.error { (text(e)) } }
                                }
                            }
                            @if may_retry && h.groups.iter().any(|g| g.sync == SyncState::OutOfSync) {
                                (button(&session, &format!("/hosts/{}/retry", h.id), "Retry", ""))
                            }
                        }
                    }
                }
            }
        }
        @if list.hosts.is_empty() { p.empty { "No hosts." } }
    };
    Ok(page(Page::Hosts, Some(&session), body).into_response())
}

pub(super) async fn accept_tags(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    session.form(&body)?;
    let req = SetHostTags {
        accept: true,
        ..SetHostTags::default()
    };
    blocking(&state, move |e| e.set_host_tags(&id, req)).await?;
    Ok(Redirect::to("/hosts").into_response())
}

pub(super) async fn retry(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    session.form(&body)?;
    blocking(&state, move |e| e.retry_host(&id)).await?;
    Ok(Redirect::to("/hosts").into_response())
}
