//! Where S3-compatible storage is and who we are to it, read once from the usual
//! variables, for `hoist push --s3` and for the server's `--bundle-store s3://...`:
//! `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (a custom endpoint is addressed path-style),
//! `AWS_REGION` or `AWS_DEFAULT_REGION` (default us-east-1), `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; and the `s3://BUCKET/KEY` form.
//!
//! Not here: requests. Callers presign with rusty-s3 from these settings and send with their
//! own HTTP client.

use hoist_protocol::secret::Secret;

/// An `s3://` location that could not be read, or settings that are missing.
#[derive(Debug, thiserror::Error)]
pub enum S3SettingsError {
    #[error("{what} {given:?} must look like {form}")]
    Location {
        what: &'static str,
        given: String,
        form: &'static str,
    },
    #[error("S3 endpoint {0:?} is not an http(s) URL")]
    Endpoint(String),
    #[error("{0} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials(&'static str),
    #[error("S3 bucket {bucket} at {endpoint}")]
    Bucket {
        bucket: String,
        endpoint: String,
        #[source]
        source: rusty_s3::BucketError,
    },
}

/// Endpoint, region and credentials of S3-compatible storage.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: url::Url,
    pub style: rusty_s3::UrlStyle,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Settings {
    /// Reads the settings from the environment; `user` names what needs them (`--s3`,
    /// `--bundle-store`) in the error when the credentials are missing.
    pub fn from_env(user: &'static str) -> Result<S3Settings, S3SettingsError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let (endpoint, style) = match env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"))
        {
            Some(e) => (e, rusty_s3::UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                rusty_s3::UrlStyle::VirtualHost,
            ),
        };
        let endpoint = url::Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or(S3SettingsError::Endpoint(endpoint))?;
        let (Some(access_key_id), Some(secret)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(S3SettingsError::NoCredentials(user));
        };
        Ok(S3Settings {
            endpoint,
            style,
            region,
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
        })
    }

    pub fn credentials(&self) -> rusty_s3::Credentials {
        match &self.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(
                self.access_key_id.clone(),
                self.secret_access_key.expose().to_owned(),
                t.expose().to_owned(),
            ),
            None => rusty_s3::Credentials::new(
                self.access_key_id.clone(),
                self.secret_access_key.expose().to_owned(),
            ),
        }
    }

    pub fn bucket(&self, bucket: &str) -> Result<rusty_s3::Bucket, S3SettingsError> {
        rusty_s3::Bucket::new(
            self.endpoint.clone(),
            self.style,
            bucket.to_owned(),
            self.region.clone(),
        )
        .map_err(|source| S3SettingsError::Bucket {
            bucket: bucket.to_owned(),
            endpoint: self.endpoint.to_string(),
            source,
        })
    }
}

/// Splits `s3://BUCKET/REST` into the bucket and the rest (without its leading `/`; empty
/// when there is none). `what` and `form` name the input in the error.
pub fn parse_location(
    s: &str,
    what: &'static str,
    form: &'static str,
) -> Result<(String, String), S3SettingsError> {
    let bad = || S3SettingsError::Location {
        what,
        given: s.to_owned(),
        form,
    };
    let rest = s.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = !bucket.is_empty()
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid_bucket {
        return Err(bad());
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let p = |s| parse_location(s, "--x", "s3://BUCKET/KEY");
        assert_eq!(p("s3://b/k/x.tgz").unwrap(), ("b".into(), "k/x.tgz".into()));
        assert_eq!(p("s3://b").unwrap(), ("b".into(), String::new()));
        assert_eq!(p("s3://b/").unwrap(), ("b".into(), String::new()));
        for bad in ["http://b/k", "s3://", "s3:///k", "s3://b c/k"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("--x") && e.contains("s3://BUCKET/KEY"), "{e}");
        }
    }
}
