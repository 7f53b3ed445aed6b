//! Where the coordinator's side reaches S3-compatible storage, from the usual variables:
//! `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (a custom endpoint is addressed
//! path-style), `AWS_REGION` or `AWS_DEFAULT_REGION` (default us-east-1),
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`. `hoist push --s3`
//! and a pipeline's S3 source (`hoist server`) both read them here.
//!
//! Deliberately not here: any request (each caller signs and sends its own with rusty-s3).

use hoist_protocol::secret::Secret;

/// The S3 endpoint, region and credentials, read once.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    style: rusty_s3::UrlStyle,
    region: String,
    key_id: String,
    secret: Secret,
    token: Option<Secret>,
}

impl S3Env {
    /// The settings from the environment; `None` without the two credential variables.
    pub fn from_env() -> Option<S3Env> {
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
        Some(S3Env {
            endpoint,
            style,
            region,
            key_id: env("AWS_ACCESS_KEY_ID")?,
            secret: Secret::new(env("AWS_SECRET_ACCESS_KEY")?),
            token: env("AWS_SESSION_TOKEN").map(Secret::new),
        })
    }

    pub fn credentials(&self) -> rusty_s3::Credentials {
        match &self.token {
            Some(t) => rusty_s3::Credentials::new_with_token(
                self.key_id.clone(),
                self.secret.expose().to_owned(),
                t.expose().to_owned(),
            ),
            None => {
                rusty_s3::Credentials::new(self.key_id.clone(), self.secret.expose().to_owned())
            }
        }
    }

    pub fn bucket(&self, name: &str) -> Result<rusty_s3::Bucket, String> {
        let url = url::Url::parse(&self.endpoint)
            .map_err(|_| format!("S3 endpoint {:?} is not a URL", self.endpoint))?;
        rusty_s3::Bucket::new(url, self.style, name.to_owned(), self.region.clone())
            .map_err(|e| format!("S3 bucket {name} at {}: {e}", self.endpoint))
    }
}
