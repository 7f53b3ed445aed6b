//! The dashboard's application and pipeline pages: each application's groups (tag filters,
//! rollout, target revision, counts by sync state), the pipelines with their recent
//! releases, one release (its stages and their states, who approved or rejected and when)
//! and the approve and reject buttons at a gate. Not here: deployments and hosts (`pages`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use hoist_protocol::operator::{Decision, Release, StageState};
use maud::{html, Markup};

use super::session::Session;
use super::view::{badge, page, text, time, Page};
use super::DashError;
use crate::api::{blocking, AppState};

pub(super) async fn applications(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, DashError> {
    let groups = blocking(&state, |e| {
        let apps = e.applications()?;
        apps.applications
            .into_iter()
            .map(|a| {
                let g = e.groups(&a.name)?;
                Ok((a, g.groups))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let body = html! {
        h1 { "Applications" }
        @for (app, list) in &groups {
            section.app {
                h2 { (text(&app.name)) }
                table {
                    thead { tr { th { "Group" } th { "Tag filters" } th { "Rollout" } th { "Target revision" } th { "Hosts by sync state" } } }
                    tbody {
                        @for g in list {
                            tr data-group=(g.name) {
                                td { (text(&g.name)) }
                                td {
                                    @for f in &g.tag_filters {
                                        div { @for (k, v) in f { span.tag { (text(k)) "=" (text(v)) } " " } }
                                    }
                                    @if g.tag_filters.is_empty() { "every host" }
                                }
                                td {
                                    (g.rollout.to_string())
                                    @if g.bake_secs > 0 { ", bake " (g.bake_secs) " s" }
                                    @if g.auto_rollback { ", auto-rollback" }
                                    @if !g.catch_up { ", no catch-up" }
                                }
                                td {
                                    @if let Some(t) = &g.target {
                                        (text(&t.revision.revision.describe())) br;
                                        small { a href={ "/deployments/" (t.deployment_id) } { (t.deployment_id) } }
                                    } @else { "—" }
                                }
                                td {
                                    span.n.in_sync { (g.sync_counts.in_sync) " in sync" } " · "
                                    span.n.catching_up { (g.sync_counts.catching_up) " catching up" } " · "
                                    span.n.out_of_sync { (g.sync_counts.out_of_sync) " out of sync" } " · "
                                    span.n { (g.sync_counts.never_deployed) " never deployed" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if groups.is_empty() { p.empty { "No applications." } }
    };
    Ok(page(Page::Applications, Some(&session), body).into_response())
}

fn releases_table(releases: &[Release]) -> Markup {
    html! {
        table.releases {
            thead { tr { th { "Release" } th { "State" } th { "Revision" } th { "Source" } th { "Created" } } }
            tbody {
                @for r in releases {
                    tr data-state=(r.state.as_str()) {
                        td { a href={ "/releases/" (r.id) } { (r.id) } }
                        td { (badge(r.state.as_str())) }
                        td { (text(&r.revision.describe())) }
                        td {
                            @if let Some(s) = &r.source_ref { (text(s)) }
                            @if let Some(m) = &r.message { br; small.commit { (text(m)) } }
                        }
                        td { (time(Some(r.created_ms))) " by " (text(&r.creator)) }
                    }
                }
            }
        }
    }
}

pub(super) async fn pipelines(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, DashError> {
    let (list, releases) =
        blocking(&state, |e| Ok((e.pipelines(None)?, e.releases(None)?))).await?;
    let body = html! {
        h1 { "Pipelines" }
        @for p in &list.pipelines {
            section.pipeline {
                h2 { (text(&p.name)) " " small { "(" (text(&p.application)) ")" } }
                p {
                    "Stages: "
                    @for (i, s) in p.stages.iter().enumerate() {
                        @if i > 0 { " → " }
                        (text(&s.group)) @if s.manual_approval { " (approval)" }
                    }
                }
                @if let Some(src) = &p.source { p { "Source: " (text(&src.describe())) } }
                (releases_table(&releases.releases.iter().filter(|r| r.pipeline == p.name).take(20).cloned().collect::<Vec<_>>()))
            }
        }
        @if list.pipelines.is_empty() { p.empty { "No pipelines." } }
    };
    Ok(page(Page::Pipelines, Some(&session), body).into_response())
}

pub(super) async fn release(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let r = blocking(&state, move |e| e.release(&id)).await?;
    let may_approve = session.may_post("/releases/{id}/approve");
    let may_reject = session.may_post("/releases/{id}/reject");
    let body = html! {
        h1 { "Release " (r.id) }
        dl.facts {
            dt { "State" } dd #state { (badge(r.state.as_str())) }
            dt { "Pipeline" } dd { (text(&r.pipeline)) }
            dt { "Revision" } dd { (text(&r.revision.describe())) }
            @if let Some(s) = &r.source_ref { dt { "Source" } dd { (text(s)) } }
            @if let Some(m) = &r.message { dt { "Message" } dd.commit { (text(m)) } }
            dt { "Created" } dd { (time(Some(r.created_ms))) " by " (text(&r.creator)) }
            dt { "Ended" } dd { (time(r.ended_ms)) }
        }
        h2 { "Stages" }
        ol.stages {
            @for s in &r.stages {
                li data-group=(s.group) data-state=(s.state.as_str()) {
                    strong { (text(&s.group)) } " " (badge(s.state.as_str()))
                    @if let Some(d) = &s.deployment_id { " " a href={ "/deployments/" (d) } { (d) } }
                    @if let Some(m) = &s.message { " " small { (text(m)) } }
                    @if let Some(by) = &s.approved_by { div.approved { "approved by " (text(by)) " at " (time(s.approved_ms)) } }
                    @if let Some(by) = &s.rejected_by { div.rejected { "rejected by " (text(by)) " at " (time(s.rejected_ms)) } }
                    @if let Some(c) = &s.comment { div { "comment: " (text(c)) } }
                    @if s.state == StageState::AwaitingApproval && may_approve && may_reject {
                        form.gate method="post" action={ "/releases/" (r.id) "/approve" } {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="text" name="comment" placeholder="comment (optional)" maxlength="1000";
                            button type="submit" class="go" { "Approve" }
                            " "
                            button type="submit" class="danger" formaction={ "/releases/" (r.id) "/reject" } { "Reject" }
                        }
                    }
                }
            }
        }
    };
    Ok(page(Page::Pipelines, Some(&session), body).into_response())
}

fn decision(session: &Session, body: &Bytes) -> Result<Decision, DashError> {
    let fields = session.form(body)?;
    Ok(Decision {
        comment: fields.get("comment").filter(|c| !c.is_empty()).cloned(),
        by: session.identity.name.clone(),
    })
}

pub(super) async fn approve(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    let d = decision(&session, &body)?;
    let r = blocking(&state, move |e| e.approve_release(&id, d)).await?;
    Ok(Redirect::to(&format!("/releases/{}", r.id)).into_response())
}

pub(super) async fn reject(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    let d = decision(&session, &body)?;
    let r = blocking(&state, move |e| e.reject_release(&id, d)).await?;
    Ok(Redirect::to(&format!("/releases/{}", r.id)).into_response())
}
