//! The local S3-compatible server the apply benchmark fetches from: s3s (it checks SigV4) on
//! its own runtime, and presigned GET URLs for objects in it — what an operator hands to hosts.
//!
//! Its GetObject is the bench's own ([`Objects`]), not s3s-fs's: that one hashes the whole
//! object with MD5 before each response (the tests place objects as files, with no stored
//! ETag) and streams it in 4 KiB reads, each a trip through tokio's blocking pool. Measured
//! on the 113 MB archive, the download then took seconds more than the agent's own work, so
//! the figure timed the test server. Here the object streams in 1 MiB reads.
//!
//! Not a general S3 server or client: GetObject of a whole object only, and objects are placed
//! by writing files under the bucket directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hoist_tests::servers;

pub const BUCKET: &str = "bench";

pub struct S3Server {
    /// Serves on its own threads; dropping it stops the server.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    root: PathBuf,
}

impl S3Server {
    pub fn start(root: &Path) -> anyhow::Result<S3Server> {
        std::fs::create_dir_all(root.join(BUCKET))
            .with_context(|| format!("creating {}", root.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the S3 server's runtime")?;
        let objects = Objects {
            root: root.to_path_buf(),
        };
        let addr = runtime.block_on(servers::serve_s3(objects, false));
        Ok(S3Server {
            _runtime: runtime,
            addr,
            root: root.to_path_buf(),
        })
    }

    /// Where an object with this key lives on disk.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// A presigned GET URL for `key`, valid for an hour.
    pub fn presigned_get(&self, key: &str) -> String {
        servers::presigned_get(
            &format!("http://{}", self.addr),
            BUCKET,
            key,
            Duration::from_secs(3600),
        )
    }
}

/// GetObject of whole files under the root (`<root>/<bucket>/<key>`), streamed in
/// [`READ_BYTES`] reads.
#[derive(Debug)]
struct Objects {
    root: PathBuf,
}

const READ_BYTES: usize = 1 << 20;

#[async_trait::async_trait]
impl s3s::S3 for Objects {
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        let input = req.input;
        if input.range.is_some() {
            return Err(s3s::s3_error!(NotImplemented, "ranges"));
        }
        let plain = |s: &str| !s.is_empty() && !s.contains("..") && !s.starts_with('/');
        if !plain(&input.bucket) || !plain(&input.key) {
            return Err(s3s::s3_error!(InvalidArgument, "bucket or key"));
        }
        let path = self.root.join(&input.bucket).join(&input.key);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| s3s::s3_error!(NoSuchKey))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| s3s::s3_error!(e, InternalError))?
            .len();
        let body = tokio_util::io::ReaderStream::with_capacity(file, READ_BYTES);
        let output = s3s::dto::GetObjectOutput {
            body: Some(s3s::dto::StreamingBlob::wrap(body)),
            content_length: i64::try_from(len).ok(),
            ..Default::default()
        };
        Ok(s3s::S3Response::new(output))
    }
}
