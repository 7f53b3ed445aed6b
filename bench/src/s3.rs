//! A local S3-compatible server (s3s-fs, in process, on 127.0.0.1 port 0) that checks SigV4,
//! and presigned GET URLs for objects in it — what an operator hands to hosts.
//!
//! Not a general S3 client: objects are placed by writing files under the bucket directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

const ACCESS_KEY: &str = "AKIAHOISTBENCH";
const SECRET_KEY: &str = "hoist-bench-secret-key";
pub const BUCKET: &str = "bench";

pub struct S3Server {
    /// Serves on its own threads; dropping it stops the server.
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    root: PathBuf,
}

impl S3Server {
    pub fn start(root: &Path) -> anyhow::Result<S3Server> {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        std::fs::create_dir_all(root.join(BUCKET))
            .with_context(|| format!("creating {}", root.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the S3 server's runtime")?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("s3s-fs over {}: {e:?}", root.display()))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the S3 server")?;
        let addr = listener.local_addr().context("S3 server address")?;
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
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
    pub fn presigned_get(&self, key: &str) -> anyhow::Result<String> {
        let endpoint = format!("http://{}", self.addr)
            .parse()
            .context("S3 endpoint URL")?;
        let bucket =
            Bucket::new(endpoint, UrlStyle::Path, BUCKET, "us-east-1").context("S3 bucket URL")?;
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
        Ok(bucket
            .get_object(Some(&creds), key)
            .sign(Duration::from_secs(3600))
            .to_string())
    }
}
