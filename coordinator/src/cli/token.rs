//! `hoist token create [--expires DURATION] [--max-uses N] [--allow-tag KEY=VALUE]...`
//! (prints the new registration token alone on stdout, its id on stderr),
//! `hoist token create --operator --role ROLE [--name NAME]` (an operator token, likewise),
//! `hoist token list [--json]` (both kinds, never a secret) and `hoist token revoke ID`
//! (an operator token's id starts with `op-`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{
    CreateOperatorToken, CreateRegistrationToken, OperatorToken, OperatorTokenInfo,
    OperatorTokenList, RegistrationToken, RegistrationTokenInfo, RegistrationTokenList, Role,
};

use super::client::{seg, Client};
use super::{esc, print_json, table, when, UsageError};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a registration token for new hosts, or with --operator an operator token
    /// (shown once).
    Create {
        /// Create an operator token (with --role and an optional --name) instead.
        #[arg(long)]
        operator: bool,
        /// The operator token's role: admin, deployer or viewer.
        #[arg(long, value_parser = clap::value_parser!(Role))]
        role: Option<Role>,
        /// Who holds the operator token; approvals and rejections made with it record it.
        #[arg(long)]
        name: Option<String>,
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
    /// List registration tokens (id, created, expiry, uses and scope) and operator tokens
    /// (id, role, name): never a secret.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a registration token (hosts registered with it keep working) or an operator
    /// token (`op-...`, refused from then on).
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

fn operator_table(tokens: &[OperatorTokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                esc(&t.id),
                when(t.created_ms),
                t.role.to_string(),
                t.name.as_deref().map(esc).unwrap_or_else(|| "-".into()),
                if t.revoked { "revoked" } else { "usable" }.into(),
            ]
        })
        .collect();
    table(
        &["OPERATOR TOKEN", "CREATED", "ROLE", "NAME", "STATUS"],
        &rows,
    )
}

pub async fn run(client: &Client, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            operator: true,
            role,
            name,
            expires,
            max_uses,
            allow_tags,
        } => {
            if expires.is_some() || max_uses.is_some() || !allow_tags.is_empty() {
                return Err(UsageError(
                    "token create --operator takes --role and --name only \
                     (--expires, --max-uses and --allow-tag are for registration tokens)"
                        .into(),
                )
                .into());
            }
            let role = role.ok_or_else(|| {
                UsageError("token create --operator needs --role admin|deployer|viewer".into())
            })?;
            let req = CreateOperatorToken { role, name };
            let t: OperatorToken = client.post("/v1/operator-tokens", &req).await?;
            println!("{}", t.token);
            eprintln!("operator token {} ({}) created", esc(&t.id), t.role);
        }
        TokenCommand::Create {
            operator: false,
            role,
            name,
            expires,
            max_uses,
            allow_tags,
        } => {
            if role.is_some() || name.is_some() {
                return Err(
                    UsageError("token create: --role and --name need --operator".into()).into(),
                );
            }
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
            let ops: OperatorTokenList = client.get("/v1/operator-tokens").await?;
            if json {
                let mut v = serde_json::to_value(&list)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("operator_tokens".into(), serde_json::to_value(&ops.tokens)?);
                }
                print_json(&v)?;
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
            if !ops.tokens.is_empty() {
                println!("\n{}", operator_table(&ops.tokens));
            }
        }
        TokenCommand::Revoke { id } if id.starts_with("op-") => {
            let t: OperatorTokenInfo = client
                .post(
                    &format!("/v1/operator-tokens/{}/revoke", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            eprintln!("operator token {} revoked", esc(&t.id));
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
