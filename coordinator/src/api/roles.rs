//! Which role each operator route needs: the one rule, applied by the [`super::Operator`]
//! extractor from the request head (method and matched route pattern) before any body is
//! read, so the API and the CLI get the same 403 answer. Also the routes of operator
//! tokens themselves. Not here: how a token is checked (`extract`, `service`).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use hoist_protocol::operator::{CreateOperatorToken, Role};

use super::{blocking, ApiJson, ApiResult, AppState, Operator};

/// The role an operator request needs: reading (and signing out of the dashboard) needs
/// `viewer`, but webhooks (read or changed) need `admin`; deploying (bundles, revisions, deployments and their stops, releases,
/// approvals, host retries, from the API or the dashboard's buttons) `deployer`; every
/// other change `admin`, including a route this table does not name (the dashboard's
/// accepting of a host's tags among them). The dashboard shows a button only when this
/// allows its route.
pub(crate) fn needed(method: &Method, route: &str) -> Role {
    // A webhook's URL may carry its receiver's token: even reading webhooks is admin's.
    if matches!(route, "/v1/webhooks" | "/webhooks") {
        return Role::Admin;
    }
    if method == Method::GET
        || method == Method::HEAD
        || (method, route) == (&Method::POST, "/sign-out")
    {
        return Role::Viewer;
    }
    let deploys = matches!(
        (method.as_str(), route),
        ("PUT", "/v1/bundles")
            | ("POST", "/v1/applications/{app}/revisions")
            | ("POST", "/v1/deployments")
            | ("POST", "/v1/deployments/{id}/stop")
            | ("POST", "/v1/pipelines/{name}/releases")
            | ("POST", "/v1/releases/{id}/approve")
            | ("POST", "/v1/releases/{id}/reject")
            | ("POST", "/v1/hosts/{id}/retry")
            | ("POST", "/deployments/{id}/stop")
            | ("POST", "/releases/{id}/approve")
            | ("POST", "/releases/{id}/reject")
            | ("POST", "/hosts/{id}/retry")
    );
    if deploys {
        Role::Deployer
    } else {
        Role::Admin
    }
}

pub(super) async fn create_operator_token(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateOperatorToken>,
) -> ApiResult<impl IntoResponse> {
    let t = blocking(&state, move |e| e.create_operator_token(req)).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub(super) async fn list_operator_tokens(
    State(state): State<AppState>,
    _op: Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(blocking(&state, |e| e.operator_tokens()).await?))
}

pub(super) async fn revoke_operator_token(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        blocking(&state, move |e| e.revoke_operator_token(&id)).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_viewer_deploying_deployer_and_the_rest_admin() {
        assert_eq!(needed(&Method::GET, "/v1/operator-tokens"), Role::Viewer);
        assert_eq!(needed(&Method::GET, "/v1/deployments/{id}"), Role::Viewer);
        assert_eq!(needed(&Method::GET, "/hosts"), Role::Viewer);
        assert_eq!(needed(&Method::POST, "/sign-out"), Role::Viewer);
        for (m, r) in [
            (Method::PUT, "/v1/bundles"),
            (Method::POST, "/v1/deployments"),
            (Method::POST, "/v1/deployments/{id}/stop"),
            (Method::POST, "/v1/releases/{id}/approve"),
            (Method::POST, "/v1/hosts/{id}/retry"),
            (Method::POST, "/deployments/{id}/stop"),
            (Method::POST, "/releases/{id}/approve"),
            (Method::POST, "/releases/{id}/reject"),
            (Method::POST, "/hosts/{id}/retry"),
        ] {
            assert_eq!(needed(&m, r), Role::Deployer, "{m} {r}");
        }
        for (m, r) in [
            (Method::POST, "/v1/operator-tokens"),
            (Method::POST, "/v1/registration-tokens"),
            (Method::POST, "/v1/hosts/{id}/revoke"),
            (Method::POST, "/v1/hosts/{id}/tags"),
            (Method::PATCH, "/v1/applications/{app}/groups/{group}"),
            (Method::DELETE, "/v1/pipelines/{name}"),
            (Method::POST, "/v1/something/new"),
            (Method::POST, "/hosts/{id}/accept"),
            (Method::GET, "/v1/webhooks"),
            (Method::POST, "/v1/webhooks"),
            (Method::DELETE, "/v1/webhooks/{id}"),
            (Method::POST, "/v1/webhooks/{id}/test"),
            (Method::GET, "/webhooks"),
        ] {
            assert_eq!(needed(&m, r), Role::Admin, "{m} {r}");
        }
    }
}
