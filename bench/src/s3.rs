//! The local S3-compatible server the apply benchmark fetches from: the tests' in-process
//! s3s-fs (it checks SigV4), on its own runtime, and presigned GET URLs for objects in it —
//! what an operator hands to hosts.
//!
//! Not a general S3 client: objects are placed by writing files under the bucket directory.

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
        let addr = runtime.block_on(servers::start_s3s(root, false));
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
