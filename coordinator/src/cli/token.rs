//! `hoist token create [--expires DURATION] [--max-uses N] [--allow-tag KEY=VALUE]...`
//! (prints the new registration token alone on stdout, its id on stderr),
//! `hoist token list [--json]` (never a secret) and `hoist token revoke ID`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{
    CreateRegistrationToken, RegistrationToken, RegistrationTokenInfo, RegistrationTokenList,
};

use super::client::{seg, Client};
use super::{esc, print_json, table, when, UsageError};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a registration token for new hosts (shown once).
    Create {
        /// Refuse the token after this long, e.g. `1h`, `7d`.
        #[arg(long, value_parser = super::duration)]
        expires: Option<Duration>,
        /// Refuse the token once this many hosts registered with it.
        #[arg(long)]
        max_uses: Option<u32>,
        /// Hosts registering with this token may claim only these tags (repeat the flag;
        /// the same key with several values allows any of them).
        #[arg(long = "allow-tag", value_name = "KEY=VALUE")]
        allow_tags: Vec<String>,
    },
    /// List registration tokens: id, created, expiry, uses and scope (never the secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a registration token; hosts registered with it keep working.
    Revoke { id: String },
}

fn scope(allow: &[String]) -> Result<BTreeMap<String, Vec<String>>, UsageError> {
    let mut scope: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in allow {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| UsageError(format!("--allow-tag {a:?} must look like KEY=VALUE")))?;
        let values = scope.entry(k.to_owned()).or_default();
        if !values.iter().any(|x| x == v) {
            values.push(v.to_owned());
        }
    }
    Ok(scope)
}

fn describe_scope(scope: &BTreeMap<String, Vec<String>>) -> String {
    if scope.is_empty() {
        return "any tags".into();
    }
    scope
        .iter()
        .map(|(k, vs)| format!("{}={}", esc(k), esc(&vs.join("|"))))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(client: &Client, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            expires,
            max_uses,
            allow_tags,
        } => {
            let req = CreateRegistrationToken {
                expires_secs: expires.map(|d| d.as_secs().max(1)),
                max_uses,
                allowed_tags: scope(&allow_tags)?,
            };
            let t: RegistrationToken = client.post("/v1/registration-tokens", &req).await?;
            println!("{}", t.token);
            if !t.id.is_empty() {
                eprintln!(
                    "registration token {} created; remove it from agent.yaml once the host \
                     has registered",
                    esc(&t.id)
                );
            }
        }
        TokenCommand::List { json } => {
            let list: RegistrationTokenList = client.get("/v1/registration-tokens").await?;
            if json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        esc(&t.id),
                        when(t.created_ms),
                        t.expires_ms.map(when).unwrap_or_else(|| "never".into()),
                        match t.max_uses {
                            Some(m) => format!("{}/{m}", t.uses),
                            None => t.uses.to_string(),
                        },
                        t.status.as_str().into(),
                        describe_scope(&t.allowed_tags),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "CREATED", "EXPIRES", "USES", "STATUS", "SCOPE"],
                    &rows
                )
            );
        }
        TokenCommand::Revoke { id } => {
            let t: RegistrationTokenInfo = client
                .post(
                    &format!("/v1/registration-tokens/{}/revoke", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            eprintln!("registration token {} revoked", esc(&t.id));
        }
    }
    Ok(ExitCode::SUCCESS)
}
