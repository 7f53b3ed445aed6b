//! Wire types between the Hoist agent, the coordinator and the operator CLI.
//!
//! Layout:
//! - [`agent`]: what a host sends and receives under `/v1/hosts/...` and `/v1/commands/...`.
//! - [`operator`]: what the `hoist` CLI sends and receives under `/v1/...` with an operator token.
//! - [`text`]: how text that came over the wire is shown on a terminal (pure).
//! - [`secret`]: a string that prints as `***` (tokens, host secrets, keys).
//! - [`variables`]: the rules of deployment variables, which both ends check.
//! - [`signature`]: the signed manifest of a revision (decoding and bounds; no verifying).
//!
//! Serde and plain functions only, no IO. Every message tolerates unknown fields from newer peers (no
//! `deny_unknown_fields`), and enums that may grow carry an `Unknown` fallback so an older
//! peer still decodes the rest of the message.

pub mod agent;
pub mod operator;
pub mod secret;
pub mod signature;
pub mod text;
pub mod variables;

/// Path prefix of every API route; bumped only on incompatible changes.
pub const API_PREFIX: &str = "/v1";

/// Header naming the host on host requests; the host secret goes in `Authorization: Bearer`.
pub const HOST_ID_HEADER: &str = "x-hoist-host";

/// Body of every non-2xx answer from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A sentence for a person: lowercase, names what failed on what.
    pub error: String,
    /// When the input had several problems (a pipeline file): each, for a line of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}
