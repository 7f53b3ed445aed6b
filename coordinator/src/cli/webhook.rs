//! `hoist webhook create --app A --url URL [--events deployment,release,host]
//! [--secret S | --secret-file FILE]` (prints the id; with neither, a generated secret on a
//! second line, shown once),
//! `hoist webhook list [--json]` (each webhook with its recent deliveries; never a secret),
//! `hoist webhook delete ID` and `hoist webhook test ID` (sends a `test` event now and
//! prints what the receiver answered; exit 1 when it was not 2xx).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use hoist_protocol::operator::{
    CreateWebhook, EventKind, Webhook, WebhookInfo, WebhookList, WebhookTest,
};

use super::client::{seg, Client};
use super::sign::read_first_line;
use super::{esc, print_json, table, when};

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// POST an application's deployment, release and host events to a URL, signed with a
    /// secret (X-Hoist-Signature: sha256=HMAC-SHA256 of the body).
    Create {
        /// The application whose events are sent.
        #[arg(long = "app", value_name = "APP")]
        application: String,
        /// http:// or https:// (plain http sends events unencrypted).
        #[arg(long)]
        url: String,
        /// Which events, comma-separated (default: all of them).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(EventKind))]
        events: Vec<EventKind>,
        /// The signing secret, 16 to 256 bytes (default: one is generated and printed once).
        /// On a command line the process list shows it: prefer --secret-file or the
        /// environment variable.
        #[arg(long, env = "HOIST_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// A file whose first line is the signing secret (at most 4 KiB).
        #[arg(long, value_name = "FILE", conflicts_with = "secret")]
        secret_file: Option<PathBuf>,
    },
    /// List webhooks with their recent deliveries (status, attempts, last error).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook and its deliveries.
    Delete { id: String },
    /// Send a `test` event to the webhook now and print the receiver's answer.
    Test { id: String },
}

fn kinds(events: &[EventKind]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn listing(w: &WebhookInfo) -> String {
    let head = table(
        &["WEBHOOK", "APPLICATION", "EVENTS", "CREATED", "URL"],
        &[vec![
            esc(&w.id),
            esc(&w.application),
            kinds(&w.events),
            when(w.created_ms),
            esc(&w.url),
        ]],
    );
    if w.deliveries.is_empty() {
        return format!("{head}\n  no deliveries yet");
    }
    let rows: Vec<Vec<String>> = w
        .deliveries
        .iter()
        .map(|d| {
            vec![
                format!("  {}", esc(&d.event_id)),
                d.kind.to_string(),
                esc(&d.state),
                d.status.to_string(),
                d.attempts.to_string(),
                d.last_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                d.last_error
                    .as_deref()
                    .map(esc)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let deliveries = table(
        &[
            "  EVENT",
            "TYPE",
            "STATE",
            "STATUS",
            "ATTEMPTS",
            "HTTP",
            "LAST ERROR",
        ],
        &rows,
    );
    format!("{head}\n{deliveries}")
}

pub async fn run(client: &Client, cmd: WebhookCommand) -> Result<ExitCode> {
    match cmd {
        WebhookCommand::Create {
            application,
            url,
            events,
            secret,
            secret_file,
        } => {
            let secret = match secret_file {
                Some(path) => Some(read_first_line(&path, "webhook secret")?),
                None => secret,
            };
            let req = CreateWebhook {
                application,
                url,
                events,
                secret,
            };
            let w: Webhook = client.post("/v1/webhooks", &req).await?;
            println!("{}", w.info.id);
            match &w.secret {
                Some(s) => {
                    println!("{s}");
                    eprintln!(
                        "webhook {} created for {} ({}); the second line is its secret, \
                         shown this once",
                        esc(&w.info.id),
                        esc(&w.info.application),
                        kinds(&w.info.events)
                    );
                }
                None => eprintln!(
                    "webhook {} created for {} ({})",
                    esc(&w.info.id),
                    esc(&w.info.application),
                    kinds(&w.info.events)
                ),
            }
        }
        WebhookCommand::List { json } => {
            let list: WebhookList = client.get("/v1/webhooks").await?;
            if json {
                print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            if list.webhooks.is_empty() {
                println!("no webhooks");
            }
            let shown: Vec<String> = list.webhooks.iter().map(listing).collect();
            println!("{}", shown.join("\n\n"));
        }
        WebhookCommand::Delete { id } => {
            let req = client.request(
                reqwest::Method::DELETE,
                &format!("/v1/webhooks/{}", seg(&id)),
            )?;
            let w: WebhookInfo = client.send(req).await?;
            eprintln!("webhook {} deleted", esc(&w.id));
        }
        WebhookCommand::Test { id } => {
            let t: WebhookTest = client
                .post(
                    &format!("/v1/webhooks/{}/test", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            let status = t
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no answer".into());
            if t.delivered {
                println!(
                    "delivered: the receiver answered {status} (event {})",
                    esc(&t.event_id)
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "not delivered: {} (event {})",
                esc(t.error.as_deref().unwrap_or(&status)),
                esc(&t.event_id)
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
