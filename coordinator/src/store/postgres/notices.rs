//! Notices between replicas over PostgreSQL's `LISTEN`/`NOTIFY`: one channel, one listening
//! connection per replica (not pooled), held by a task that reconnects after a second when
//! it is lost and then delivers [`Notice::Resync`], since notices sent meanwhile are gone.
//!
//! A payload is `ORIGIN KIND ID ID ...` (`S`: commands started for hosts, `H`: hosts
//! changed, `C`: deployments changed, with no ids), split so that each stays well under PostgreSQL's 8000-byte limit; a replica
//! ignores its own (its origin is random per store). No polling of the database: a held
//! poll waits on its host's waker, which a notice wakes. Not here: what a notice does (the
//! service's `replicas`).

use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use super::PgStore;
use crate::store::{Notice, NoticeHandler, Result};

/// The one channel every replica listens on.
const CHANNEL: &str = "hoist_notices";

/// Largest payload sent (PostgreSQL refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7000;

/// Wait before reconnecting a lost listening connection.
const RECONNECT: Duration = Duration::from_secs(1);

pub(super) fn publish(s: &PgStore, notice: &Notice) -> Result<()> {
    let sent = match notice {
        Notice::CommandsStarted(ids) => payloads(&s.origin, "S", ids),
        Notice::HostsChanged(ids) => payloads(&s.origin, "H", ids),
        Notice::Changed => vec![format!("{} C", s.origin)],
        Notice::Resync => return Ok(()),
    };
    // One statement for all the payloads: a fleet's hosts are dozens of them.
    s.execute(
        "telling other replicas",
        "SELECT pg_notify($1, p)::text FROM UNNEST($2::text[]) WITH ORDINALITY AS n(p, i) \
         ORDER BY i",
        &[&CHANNEL, &sent],
    )?;
    Ok(())
}

/// `ORIGIN KIND ID...` payloads, each under [`MAX_PAYLOAD`] bytes.
fn payloads(origin: &str, kind: &str, ids: &[String]) -> Vec<String> {
    let head = format!("{origin} {kind}");
    let mut out = Vec::new();
    let mut cur = head.clone();
    for id in ids {
        if cur.len() + 1 + id.len() > MAX_PAYLOAD && cur.len() > head.len() {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        cur.push(' ');
        cur.push_str(id);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

/// The notice in a payload, unless it is this replica's own or not understood.
fn parse(origin: &str, payload: &str) -> Option<Notice> {
    let mut words = payload.split(' ');
    if words.next()? == origin {
        return None;
    }
    let kind = words.next()?;
    let ids: Vec<String> = words.filter(|w| !w.is_empty()).map(str::to_owned).collect();
    match kind {
        "S" => Some(Notice::CommandsStarted(ids)),
        "H" => Some(Notice::HostsChanged(ids)),
        "C" => Some(Notice::Changed),
        _ => None,
    }
}

/// `notices` in order, each run of [`Notice::CommandsStarted`] or of
/// [`Notice::HostsChanged`] as one.
fn merged(notices: impl Iterator<Item = Notice>) -> Vec<Notice> {
    let mut out: Vec<Notice> = Vec::new();
    for notice in notices {
        match (out.last_mut(), notice) {
            (Some(Notice::CommandsStarted(ids)), Notice::CommandsStarted(more))
            | (Some(Notice::HostsChanged(ids)), Notice::HostsChanged(more)) => ids.extend(more),
            (_, notice) => out.push(notice),
        }
    }
    out
}

pub(super) fn listen(s: &PgStore, handler: NoticeHandler) -> Result<()> {
    let config = s.config.clone();
    let origin = s.origin.clone();
    s.rt.spawn(async move {
        let mut connected_before = false;
        loop {
            match follow(&config, &origin, &handler, connected_before).await {
                Ok(()) => tracing::warn!("the connection listening to other replicas closed"),
                Err(e) => tracing::warn!(error = %e, "listening to other replicas"),
            }
            connected_before = true;
            tokio::time::sleep(RECONNECT).await;
        }
    });
    Ok(())
}

/// One listening connection, until it is lost.
async fn follow(
    config: &tokio_postgres::Config,
    origin: &str,
    handler: &NoticeHandler,
    resync: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection is driven here; its notifications go to the loop below.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the connection listening to other replicas");
                    break;
                }
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(e) = listening {
        driver.abort();
        return Err(e);
    }
    tracing::info!("listening to other replicas");
    if resync {
        handler(Notice::Resync);
    }
    while let Some(payload) = rx.recv().await {
        // What arrived together (a fleet's hosts in dozens of payloads) is handled together.
        let mut arrived = vec![payload];
        while let Ok(more) = rx.try_recv() {
            arrived.push(more);
        }
        for notice in merged(arrived.iter().filter_map(|p| parse(origin, p))) {
            handler(notice);
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_small_and_parse_back_but_not_for_their_sender() {
        let ids: Vec<String> = (0..2000).map(|n| format!("h-{n:016x}")).collect();
        let sent = payloads("o1", "S", &ids);
        assert!(sent.len() > 1);
        let mut back = Vec::new();
        for p in &sent {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            assert_eq!(parse("o1", p), None, "a replica ignores its own");
            match parse("o2", p) {
                Some(Notice::CommandsStarted(got)) => back.extend(got),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, ids);
        assert_eq!(
            parse("o2", "o1 H h-1"),
            Some(Notice::HostsChanged(vec!["h-1".into()]))
        );
        assert_eq!(parse("o2", "o1 C"), Some(Notice::Changed));
        assert_eq!(parse("o2", "o1 Z h-1"), None);
        assert!(payloads("o1", "H", &[]).is_empty());
    }

    #[test]
    fn notices_arriving_together_are_merged_by_kind_in_order() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = merged(
            [
                Notice::CommandsStarted(ids(&["h-1"])),
                Notice::CommandsStarted(ids(&["h-2", "h-3"])),
                Notice::Changed,
                Notice::HostsChanged(ids(&["h-1"])),
                Notice::HostsChanged(ids(&["h-4"])),
                Notice::CommandsStarted(ids(&["h-5"])),
                Notice::Changed,
                Notice::Changed,
            ]
            .into_iter(),
        );
        assert_eq!(
            got,
            [
                Notice::CommandsStarted(ids(&["h-1", "h-2", "h-3"])),
                Notice::Changed,
                Notice::HostsChanged(ids(&["h-1", "h-4"])),
                Notice::CommandsStarted(ids(&["h-5"])),
                Notice::Changed,
                Notice::Changed,
            ]
        );
    }
}
