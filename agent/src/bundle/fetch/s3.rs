//! S3-compatible storage: the settings (the config's `s3` section, gaps filled from the
//! `AWS_*` environment as the AWS tools do) and the presigned GET of one object, made afresh
//! for each attempt so a long backoff never outlives its expiry.
//!
//! It does not download (the parent module streams what the request returns) and never logs
//! a signed URL: revisions are shown as `s3://bucket/key`.

use std::time::Duration;

use reqwest::{RequestBuilder, Url};
use rusty_s3::S3Action;

use super::FetchError;
use hoist_protocol::secret::Secret;

/// S3-compatible storage: where it is and the agent's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`; `None` means AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// `None` means `us-east-1`.
    pub region: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Without an access key the request is sent unsigned (public buckets).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

impl S3Settings {
    /// Fills what the configuration left unset from the process environment, as the AWS tools
    /// do: see [`S3Settings::with_env_defaults_from`].
    pub fn with_env_defaults(self) -> Self {
        self.with_env_defaults_from(|name| std::env::var(name).ok())
    }

    /// Settings from the environment alone.
    pub fn from_env() -> Self {
        S3Settings::default().with_env_defaults()
    }

    /// Fills gaps from `var`: credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (only when the configuration gave no access key, so a configured key
    /// is never paired with another's secret), the region from `AWS_REGION` then
    /// `AWS_DEFAULT_REGION`, the endpoint from `AWS_ENDPOINT_URL_S3` then `AWS_ENDPOINT_URL`.
    pub fn with_env_defaults_from(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if self.access_key_id.is_none() {
            if let (Some(key), Some(secret)) =
                (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
            {
                self.access_key_id = Some(key);
                self.secret_access_key = Some(Secret::new(secret));
                self.session_token = var("AWS_SESSION_TOKEN").map(Secret::new);
            }
        }
        if self.region.is_none() {
            self.region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        }
        if self.endpoint.is_none() {
            self.endpoint = var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL"));
        }
        self
    }

    fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }
}

/// The GET of `key` in `bucket` (at `version_id` when given), presigned for `ttl` anew each
/// time the returned function is called. The key is checked before anything is signed.
pub(super) fn object_request<'a>(
    client: &'a reqwest::Client,
    s3: &S3Settings,
    bucket: &str,
    key: &'a str,
    version_id: Option<&'a str>,
    ttl: Duration,
) -> Result<impl Fn() -> RequestBuilder + 'a, FetchError> {
    check_s3_key(key)?;
    let endpoint = match &s3.endpoint {
        Some(e) => e.clone(),
        None => format!("https://s3.{}.amazonaws.com", s3.region()),
    };
    let endpoint = Url::parse(&endpoint)
        .map_err(|e| FetchError::S3Settings(format!("endpoint {endpoint:?}: {e}")))?;
    let style = if s3.path_style {
        rusty_s3::UrlStyle::Path
    } else {
        rusty_s3::UrlStyle::VirtualHost
    };
    let s3_bucket =
        rusty_s3::Bucket::new(endpoint, style, bucket.to_owned(), s3.region().to_owned())
            .map_err(|e| FetchError::S3Settings(format!("bucket {bucket:?}: {e}")))?;
    let credentials = match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(key), Some(secret)) => Some(match &s3.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(
                key.clone(),
                secret.expose().to_owned(),
                token.expose().to_owned(),
            ),
            None => rusty_s3::Credentials::new(key.clone(), secret.expose().to_owned()),
        }),
        (Some(_), None) => {
            return Err(FetchError::S3Settings(
                "an access key id without a secret access key".into(),
            ))
        }
        _ => None,
    };
    Ok(move || {
        let mut action = s3_bucket.get_object(credentials.as_ref(), key);
        if let Some(v) = version_id {
            action.query_mut().insert("versionId", v.to_owned());
        }
        client.get(action.sign(ttl))
    })
}

/// An S3 key must name an object inside its bucket: `.` and `..` segments would be resolved
/// by the URL (`s3://bkt/../../meta/x` is a request for `/meta/x`) and empty segments are
/// a mistake; all are refused before anything is signed.
fn check_s3_key(key: &str) -> Result<(), FetchError> {
    let invalid = |what: &str| {
        Err(FetchError::InvalidRevision(format!(
            "s3 key {key:?} {what}"
        )))
    };
    if key.is_empty() {
        return invalid("is empty");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("has an empty segment (a leading, trailing or doubled /)"),
            "." | ".." => return invalid(&format!("has a {segment:?} segment")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_fills_only_gaps() {
        let env = |name: &str| {
            match name {
                "AWS_ACCESS_KEY_ID" => Some("ENVKEY"),
                "AWS_SECRET_ACCESS_KEY" => Some("envsecret"),
                "AWS_SESSION_TOKEN" => Some("envtoken"),
                "AWS_REGION" => Some(""),
                "AWS_DEFAULT_REGION" => Some("eu-west-3"),
                "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let filled = S3Settings::default().with_env_defaults_from(env);
        assert_eq!(filled.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(
            filled.secret_access_key.as_ref().map(Secret::expose),
            Some("envsecret")
        );
        assert_eq!(
            filled.session_token.as_ref().map(Secret::expose),
            Some("envtoken")
        );
        assert_eq!(filled.region.as_deref(), Some("eu-west-3"));
        assert_eq!(filled.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let configured = S3Settings {
            endpoint: Some("http://s3.internal".into()),
            region: Some("us-west-2".into()),
            access_key_id: Some("CONFKEY".into()),
            secret_access_key: None,
            ..S3Settings::default()
        }
        .with_env_defaults_from(env);
        assert_eq!(configured.access_key_id.as_deref(), Some("CONFKEY"));
        assert_eq!(configured.secret_access_key, None);
        assert_eq!(configured.session_token, None);
        assert_eq!(configured.region.as_deref(), Some("us-west-2"));
        assert_eq!(configured.endpoint.as_deref(), Some("http://s3.internal"));
    }
}
