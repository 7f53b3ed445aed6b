//! The coordinator's content-addressed bundle store, keyed by the sha256 of the bytes and
//! read whole or by a typed [`ByteRange`]: in a local directory ([`local`], the default) or
//! in S3-compatible storage ([`s3`], `--bundle-store s3://BUCKET/PREFIX`, which replicas on
//! one database share). Callers see one [`BundleStore`] either way.
//!
//! An upload is streamed, hashed on the way, and never held whole in memory; a bundle is
//! stored under its hash only once its bytes are known to hash to it. Not here: HTTP (the
//! `api` module reads a `Range` header into a [`ByteRange`] and answers 206 or 416) or who
//! may read a bundle.

mod local;
mod s3;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};

use crate::s3::S3Settings;

pub use self::s3::S3Location;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the upload")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The S3-compatible store failed or refused a request.
    #[error("{0}")]
    Remote(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| BundleError::Io { op, path, source }
}

/// True for 64 lowercase hex digits, the only names the store hands out.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A byte range of a stored bundle, inclusive bounds (`0..=size-1` is all of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// How many bytes the range covers.
    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// The bytes of a bundle (or of a range of it) as they are read.
pub type BundleBytes = Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

#[derive(Debug, Clone)]
pub struct BundleStore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(local::LocalStore),
    S3(Arc<s3::S3Store>),
}

impl BundleStore {
    /// The store in the local directory `dir`, created when missing.
    pub fn open(dir: &Path) -> Result<BundleStore, BundleError> {
        Ok(BundleStore {
            backend: Backend::Local(local::LocalStore::open(dir)?),
        })
    }

    /// The store at `location` in S3-compatible storage, spooling uploads in `spool_dir`
    /// (created when missing). Its requests run on the current tokio runtime.
    pub fn s3(
        settings: S3Settings,
        location: S3Location,
        spool_dir: &Path,
    ) -> Result<BundleStore, BundleError> {
        Ok(BundleStore {
            backend: Backend::S3(Arc::new(s3::S3Store::new(settings, location, spool_dir)?)),
        })
    }

    /// Whether the bundles live on this machine's disk only (what replicas cannot share).
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    /// Whether the store answers (for S3: the bucket, with these credentials).
    pub async fn check(&self) -> Result<(), BundleError> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::S3(s) => s.check().await,
        }
    }

    /// Where the bundles are, for the log.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(l) => format!("directory {}", l.dir().display()),
            Backend::S3(s) => s.describe(),
        }
    }

    /// The size of the stored bundle named `sha256`; `Ok(None)` when there is none (or its
    /// stored bytes are not known to hash to the name). Blocking: for S3 it asks the
    /// storage, so call it from a blocking thread, as the service's functions run.
    pub fn size_of(&self, sha256: &str) -> Result<Option<u64>, BundleError> {
        match &self.backend {
            Backend::Local(l) => Ok(l.size_of(sha256)),
            Backend::S3(s) => s.size_of_blocking(sha256),
        }
    }

    /// Opens the bundle named `sha256` for reading; `Ok(None)` when the store has none by
    /// that name.
    pub async fn open_bundle(&self, sha256: &str) -> Result<Option<StoredBundle>, BundleError> {
        Ok(match &self.backend {
            Backend::Local(l) => l
                .open_bundle(sha256)
                .await
                .map_err(io("opening the bundle", Path::new(sha256)))?
                .map(|b| StoredBundle {
                    size: b.size(),
                    source: Source::Local(b),
                }),
            Backend::S3(s) => s.size_of(sha256).await?.map(|size| StoredBundle {
                size,
                source: Source::S3 {
                    store: s.clone(),
                    sha256: sha256.to_owned(),
                },
            }),
        })
    }

    /// Streams `body` into the store; returns the bundle's sha256 and size.
    pub async fn put<S, B, E>(&self, body: S) -> Result<(String, u64), BundleError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        match &self.backend {
            Backend::Local(l) => l.put(body).await,
            Backend::S3(s) => s.put(body).await,
        }
    }
}

/// A stored bundle opened for reading.
#[derive(Debug)]
pub struct StoredBundle {
    size: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Local(local::LocalBundle),
    S3 {
        store: Arc<s3::S3Store>,
        sha256: String,
    },
}

impl StoredBundle {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes of `range`, or of the whole bundle for `None`; a range that does not lie
    /// inside the bundle is an `InvalidInput` error.
    pub async fn read(self, range: Option<ByteRange>) -> std::io::Result<BundleBytes> {
        if let Some(r) = range {
            if r.start > r.end || r.end >= self.size {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "bytes {}-{} are not inside the bundle's {} bytes",
                        r.start, r.end, self.size
                    ),
                ));
            }
        }
        match self.source {
            Source::Local(b) => {
                let reader = b.read(range).await?;
                Ok(tokio_util::io::ReaderStream::new(reader).boxed())
            }
            Source::S3 { store, sha256 } => store
                .read(&sha256, self.size, range)
                .await
                .map_err(std::io::Error::other),
        }
    }
}
