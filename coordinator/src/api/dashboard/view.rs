//! The dashboard's shared HTML (maud, which escapes every interpolated value): the page
//! frame with its navigation, times, state badges, the progress bar (an SVG, so the CSP
//! needs no inline style) and the one form a button posts (with the session's CSRF
//! token). Not here: what a page shows (`pages`, `fleet`) or who may press a button (the
//! callers ask `Session::may_post`).

use std::time::{Duration, UNIX_EPOCH};

use axum::response::Html;
use hoist_protocol::operator::HostCounts;
use hoist_protocol::text::esc;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Session;

/// Which page is shown (marks the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Page {
    SignIn,
    Deployments,
    Hosts,
    Applications,
    Pipelines,
    Webhooks,
}

/// A whole page; `session` shows who is signed in and the sign-out button. The part that
/// updates live is the `main#live` element (`assets/dashboard.js`).
pub fn page(current: Page, session: Option<&Session>, content: Markup) -> Html<String> {
    let nav = [
        (Page::Deployments, "/deployments", "Deployments"),
        (Page::Hosts, "/hosts", "Hosts"),
        (Page::Applications, "/applications", "Applications"),
        (Page::Pipelines, "/pipelines", "Pipelines"),
    ];
    Html(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Hoist" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header {
                    a.brand href="/deployments" { "Hoist" }
                    @if let Some(s) = session {
                        nav {
                            @for (p, href, label) in nav {
                                a href=(href) class=[(p == current).then_some("current")] { (label) }
                            }
                            @if s.may_read("/webhooks") {
                                a href="/webhooks" class=[(current == Page::Webhooks).then_some("current")] { "Webhooks" }
                            }
                        }
                        span.who {
                            (s.identity.name.as_deref().map_or_else(|| "operator".to_owned(), esc))
                            " · " (s.identity.role.as_str())
                        }
                        (button(s, "/sign-out", "Sign out", "quiet"))
                    }
                }
                main #live { (content) }
            }
        }
    }
    .into_string())
}

/// A form of one button posting to `action` with the session's CSRF token.
pub fn button(session: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A time as UTC, to the second; "—" for none.
pub fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
            .replace('T', " ")
            .replace('Z', ""),
        None => "—".to_owned(),
    }
}

/// A state as a badge; the class is the state itself (a fixed word, never input).
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state.replace('_', " ")) } }
}

/// Text that came from a host, a bundle or an operator, with control characters made
/// visible (maud escapes the HTML).
pub fn text(s: &str) -> String {
    esc(s)
}

/// Per-state counts of a deployment's hosts and their bar.
pub fn counts(c: &HostCounts) -> Markup {
    let parts = [
        ("succeeded", c.succeeded),
        ("in_progress", c.in_progress),
        ("failed", c.failed + c.interrupted + c.unknown),
        ("stopped", c.stopped + c.skipped),
        ("pending", c.pending),
    ];
    let total: u32 = parts.iter().map(|(_, n)| n).sum();
    let mut x = 0.0_f64;
    let mut rects = String::new();
    for (state, n) in parts {
        if n == 0 || total == 0 {
            continue;
        }
        let w = f64::from(n) * 100.0 / f64::from(total);
        rects.push_str(&format!(
            r#"<rect class="{state}" x="{x:.2}" y="0" width="{w:.2}" height="6"/>"#
        ));
        x += w;
    }
    html! {
        div.counts {
            svg.bar viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label="progress" {
                rect.track x="0" y="0" width="100" height="6" {}
                (PreEscaped(rects))
            }
            span.tally {
                @for (state, n) in parts {
                    @if n > 0 { span class={ "n " (state) } { (n) " " (state.replace('_', " ")) } " " }
                }
            }
        }
    }
}
