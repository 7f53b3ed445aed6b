//! Operator tokens with a role: `POST /v1/operator-tokens` [`CreateOperatorToken`] →
//! [`OperatorToken`]; `GET /v1/operator-tokens` → [`OperatorTokenList`];
//! `POST /v1/operator-tokens/{id}/revoke` → [`OperatorTokenInfo`]. Only the wire shapes and
//! the order of the roles: which route needs which role is the coordinator's API's rule.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an operator token may do. Each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read only.
    Viewer,
    /// Viewer, plus deployments, revisions and bundles, releases, approvals and host retries.
    Deployer,
    /// Everything.
    Admin,
    /// A role of a newer coordinator: allowed nothing here.
    #[serde(other)]
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
            Role::Unknown => "unknown",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Role::Unknown => 0,
            Role::Viewer => 1,
            Role::Deployer => 2,
            Role::Admin => 3,
        }
    }

    /// Whether a token of this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self != Role::Unknown && needed != Role::Unknown && self.rank() >= needed.rank()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected admin, deployer or viewer"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOperatorToken {
    pub role: Role,
    /// Who holds it: what approvals and rejections made with it record.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorToken {
    /// Shown once; the coordinator keeps only its hash.
    pub token: String,
    pub id: String,
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
}

/// An operator token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTokenInfo {
    pub id: String,
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTokenList {
    pub tokens: Vec<OperatorTokenInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_roles_below_it_allow_and_unknown_nothing() {
        assert!(Role::Admin.allows(Role::Deployer));
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Deployer.allows(Role::Viewer));
        assert!(Role::Deployer.allows(Role::Deployer));
        assert!(!Role::Deployer.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Deployer));
        assert!(!Role::Unknown.allows(Role::Viewer));
        assert!(!Role::Admin.allows(Role::Unknown));
        let r: Role = serde_json::from_str("\"owner\"").unwrap();
        assert_eq!(r, Role::Unknown);
        assert!("root".parse::<Role>().unwrap_err().contains("\"root\""));
    }
}
