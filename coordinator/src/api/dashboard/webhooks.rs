//! The dashboard's webhooks page (admin's, as the API's list is: a URL may carry its
//! receiver's token): each webhook with its application, events and URL, and its recent
//! deliveries (event, state, status, attempts, the receiver's last answer), every value
//! escaped by maud. Not here: creating, deleting or testing webhooks (the CLI and the API).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::session::Session;
use super::view::{badge, page, text, time, Page};
use super::DashError;
use crate::api::{blocking, AppState};

pub(super) async fn webhooks(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, DashError> {
    let list = blocking(&state, |e| e.webhooks()).await?;
    let body = html! {
        h1 { "Webhooks" }
        @for w in &list.webhooks {
            section.webhook data-webhook=(w.id) {
                h2 { (text(&w.id)) " · " (text(&w.application)) }
                p {
                    "Events: "
                    (w.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))
                    " · URL: " code { (text(&w.url)) }
                    " · created " (time(Some(w.created_ms)))
                }
                @if w.deliveries.is_empty() {
                    p.empty { "No deliveries yet." }
                } @else {
                    table.deliveries {
                        thead { tr { th { "Event" } th { "Type" } th { "State" } th { "Summary" } th { "Delivery" } th { "Attempts" } th { "Last answer" } th { "Next try" } } }
                        tbody {
                            @for d in &w.deliveries {
                                tr {
                                    td { small { (text(&d.event_id)) } }
                                    td { (d.kind.as_str()) }
                                    td { (badge(&d.state)) }
                                    td { (text(&d.summary)) }
                                    td { (badge(d.status.as_str())) }
                                    td { (d.attempts) }
                                    td {
                                        @if let Some(s) = d.last_status { (s) " " }
                                        @if let Some(e) = &d.last_error { (text(e)) }
                                    }
                                    td {
                                        @if d.status == hoist_protocol::operator::DeliveryStatus::Pending {
                                            (time(Some(d.next_attempt_ms)))
                                        } @else { "—" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.webhooks.is_empty() { p.empty { "No webhooks." } }
    };
    Ok(page(Page::Webhooks, Some(&session), body).into_response())
}
