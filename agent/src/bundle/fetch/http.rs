//! One HTTP attempt of a bundle download: the request (with `Range` and `If-Range` when
//! resuming), what its status means (retry, restart, fail), the checks on its headers
//! (`ETag`, `Content-Length` against the cap, `Content-Range`), and the body streamed into
//! the `.part` file. Also the URL rules shared by every HTTP source: only http(s), and shown
//! without user info, query or fragment.
//!
//! It does not decide how often to retry or verify the digest (the parent module does), and
//! it keeps nothing of an error response's body but a well-formed S3 error code.

use std::time::Duration;

use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{StatusCode, Url};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{AttemptError, FetchError, FetchSettings, MakeRequest, Progress, Remote};
use crate::retry::retry_after;

pub(super) fn parse_http_url(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| {
        // The URL itself may carry a signature: name only what is wrong with it.
        FetchError::InvalidRevision(format!("bundle url is not a valid URL: {e}"))
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(FetchError::InvalidRevision(format!(
            "bundle url scheme {other:?} is not http or https"
        ))),
    }
}

/// The URL without user info, query string and fragment: safe to log and to report.
pub(super) fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // These fail only for URLs that cannot have user info, which then have none to remove.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// One request: resumes from `progress.written` when it is not zero.
pub(super) async fn attempt(
    remote: &Remote<'_>,
    request: &MakeRequest<'_>,
    progress: &mut Progress,
    settings: &FetchSettings,
    cancel: &CancellationToken,
) -> Result<(), AttemptError> {
    let mut builder = request();
    if progress.written > 0 {
        builder = builder.header(RANGE, format!("bytes={}-", progress.written));
        if let Some(validator) = &progress.validator {
            builder = builder.header(IF_RANGE, validator);
        }
    }
    let transport = |source_error: reqwest::Error| FetchError::Http {
        url: remote.shown.clone(),
        source: source_error.without_url(),
    };
    let sent = tokio::select! {
        () = cancel.cancelled() => return Err(FetchError::Cancelled.into()),
        sent = builder.send() => sent,
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Err(transport(e).into()),
        Err(e) => {
            return Err(AttemptError::Retry {
                error: transport(e),
                after: None,
            })
        }
    };

    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let after = retry_after(response.headers());
        let detail = error_detail(response, cancel).await;
        return Err(AttemptError::Retry {
            error: FetchError::HttpStatus {
                url: remote.shown.clone(),
                status: status.as_u16(),
                detail,
            },
            after,
        });
    }
    if status == StatusCode::RANGE_NOT_SATISFIABLE && progress.written > 0 {
        // The object changed or shrank under us: start over at once.
        progress.restart().await?;
        return Err(AttemptError::Retry {
            error: FetchError::HttpStatus {
                url: remote.shown.clone(),
                status: status.as_u16(),
                detail: ": range not satisfiable, restarting".into(),
            },
            after: Some(Duration::ZERO),
        });
    }
    if !status.is_success() {
        let detail = error_detail(response, cancel).await;
        return Err(FetchError::HttpStatus {
            url: remote.shown.clone(),
            status: status.as_u16(),
            detail,
        }
        .into());
    }

    if status == StatusCode::PARTIAL_CONTENT {
        let start = content_range_start(response.headers());
        if start != Some(progress.written) {
            // Not the continuation asked for (or no range asked at all): restart cleanly.
            progress.restart().await?;
            if start != Some(0) {
                return Err(AttemptError::Retry {
                    error: FetchError::HttpStatus {
                        url: remote.shown.clone(),
                        status: status.as_u16(),
                        detail: ": unexpected content range, restarting".into(),
                    },
                    after: Some(Duration::ZERO),
                });
            }
        }
    } else if progress.written > 0 {
        debug!(url = %remote.shown, "server ignored the range, restarting the download");
        progress.restart().await?;
    }

    let response_etag = header_str(response.headers(), &ETAG);
    if let Some(expected) = remote.etag {
        let got = response_etag.as_deref().unwrap_or("");
        if unquote_etag(got) != unquote_etag(expected) {
            return Err(FetchError::EtagMismatch {
                url: remote.shown.clone(),
                expected: unquote_etag(expected).to_owned(),
                got: if got.is_empty() {
                    "none".to_owned()
                } else {
                    unquote_etag(got).to_owned()
                },
            }
            .into());
        }
    }
    // If-Range takes only a strong ETag or a date.
    progress.validator = response_etag
        .filter(|e| !e.starts_with("W/"))
        .or_else(|| header_str(response.headers(), &LAST_MODIFIED));

    let too_large = || FetchError::TooLarge {
        url: remote.shown.clone(),
        limit: settings.max_bytes,
    };
    if let Some(length) =
        header_str(response.headers(), &CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok())
    {
        if progress.written.saturating_add(length) > settings.max_bytes {
            return Err(too_large().into());
        }
    }

    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return Err(FetchError::Cancelled.into()),
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(AttemptError::Retry {
                    error: transport(e),
                    after: None,
                })
            }
        };
        let len = chunk.len() as u64;
        if progress.written.saturating_add(len) > settings.max_bytes {
            return Err(too_large().into());
        }
        progress
            .file
            .write_all(&chunk)
            .await
            .map_err(FetchError::io("writing", &progress.path))?;
        progress.hasher.update(&chunk);
        progress.written += len;
    }
}

fn header_str(headers: &HeaderMap, name: &reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

fn unquote_etag(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

/// The first byte position of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let value = header_str(headers, &CONTENT_RANGE)?;
    let range = value.strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// What an error response says, safe to put in a report: the status's standard reason phrase
/// and, from an S3 error body, its `<Code>` when that is a plain identifier
/// (`SignatureDoesNotMatch`). Nothing else from the body is kept: it is the server's text, of
/// any size and content, and would otherwise travel into reports and operators' terminals.
/// Reads at most a few KB.
async fn error_detail(mut response: reqwest::Response, cancel: &CancellationToken) -> String {
    const MAX: usize = 4096;
    let reason = response
        .status()
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let mut body = Vec::new();
    while body.len() < MAX {
        let chunk = tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(5)) => break,
            chunk = response.chunk() => chunk,
        };
        match chunk {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    match xml_element(&text, "Code").filter(|code| is_error_code(code)) {
        Some(code) => format!("{reason}: {code}"),
        None => reason,
    }
}

/// An S3 error code: a short identifier (`NoSuchKey`, `SlowDown`), nothing that could carry
/// a message.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

fn xml_element<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&close)? + start;
    let value = text[start..end].trim();
    (!value.is_empty() && value.len() <= 300).then_some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        let cases = [
            (
                "https://user:pw@bucket.example/k.zip?X-Amz-Signature=abc#f",
                "https://bucket.example/k.zip",
            ),
            ("http://127.0.0.1:8080/a/b", "http://127.0.0.1:8080/a/b"),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).unwrap();
            assert_eq!(redact_url(&url), expected, "{input}");
        }
    }

    #[test]
    fn header_parsing() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        assert_eq!(unquote_etag("W/\"abc\""), "abc");
        assert_eq!(unquote_etag("\"abc-2\""), "abc-2");
    }

    #[test]
    fn s3_error_detail_is_the_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(xml_element(body, "Code"), Some("SignatureDoesNotMatch"));
        assert!(is_error_code("SignatureDoesNotMatch"));
        for bad in ["", "Evil Code", "a\u{1b}[31m", &"A".repeat(65), "x<y"] {
            assert!(!is_error_code(bad), "{bad:?}");
        }
    }
}
