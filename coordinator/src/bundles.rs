//! The coordinator's content-addressed bundle store: `DATA_DIR/bundles/ab/abcd…` keyed by
//! the sha256 of the bytes, plus the parsing of an HTTP `Range` header value.
//!
//! An upload streams into a temp file under `DATA_DIR/bundles/tmp` while hashing, then is
//! fsynced and renamed to its hash; a bundle is never held whole in memory. Not here: HTTP
//! (the `api` module turns [`ByteRange`] into 206/416 answers) or who may read a bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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
}

#[derive(Debug, Clone)]
pub struct BundleStore {
    dir: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| BundleError::Io { op, path, source }
}

/// True for 64 lowercase hex digits, the only names the store hands out.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BundleStore {
    /// Opens the store under `dir`, creating it when missing.
    pub fn open(dir: &Path) -> Result<BundleStore, BundleError> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(io("creating", dir))?;
        Ok(BundleStore {
            dir: dir.to_owned(),
        })
    }

    /// Where the bundle with this hash lives (whether or not it exists); `None` for a name
    /// that is not a sha256, so no path outside the store can be formed.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        valid_sha256(sha256).then(|| self.dir.join(&sha256[..2]).join(sha256))
    }

    /// The size of a stored bundle.
    pub fn size_of(&self, sha256: &str) -> Option<u64> {
        let path = self.path_of(sha256)?;
        std::fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Streams `body` into the store; returns the bundle's sha256 and size.
    pub async fn put<S, E>(&self, mut body: S) -> Result<(String, u64), BundleError>
    where
        S: Stream<Item = Result<bytes_like::Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let tmp_dir = self.dir.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&tmp_dir)
            .map_err(io("creating a temp file in", &tmp_dir))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BundleError::Body(Box::new(e)))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(io("writing", &tmp_path))?;
        }
        file.flush().await.map_err(io("writing", &tmp_path))?;
        let std_file = file.into_std().await;
        let sha256 = hex::encode(hasher.finalize());
        let store = self.clone();
        let sha = sha256.clone();
        tokio::task::spawn_blocking(move || store.commit(std_file, tmp_path, &sha))
            .await
            .map_err(|e| BundleError::Body(Box::new(e)))??;
        Ok((sha256, size))
    }

    /// fsyncs the temp file and renames it to its hash (keeping an existing copy).
    fn commit(
        &self,
        mut file: std::fs::File,
        tmp_path: tempfile::TempPath,
        sha256: &str,
    ) -> Result<(), BundleError> {
        file.flush().map_err(io("writing", &tmp_path))?;
        file.sync_all().map_err(io("syncing", &tmp_path))?;
        let Some(dest) = self.path_of(sha256) else {
            return Ok(());
        };
        if dest.is_file() {
            return Ok(()); // Same content already stored; the temp file is removed on drop.
        }
        let parent = dest.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        tmp_path.persist(&dest).map_err(|e| BundleError::Io {
            op: "renaming into",
            path: dest.clone(),
            source: e.error,
        })?;
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Re-exported so callers name one `Bytes` type.
pub mod bytes_like {
    pub use axum::body::Bytes;
}

/// A satisfiable single byte range, inclusive bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range (absent, malformed, or several ranges): send the whole bundle.
    Whole,
    Partial(ByteRange),
    /// A well-formed range that does not overlap the bundle: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value against a bundle of `size` bytes (RFC 9110 §14.2:
/// a server may ignore a range it does not support, so anything but one `bytes=` range is
/// answered with the whole bundle).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let partial = |start: u64, end: u64| RangeRequest::Partial(ByteRange { start, end });
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Whole,
        // Suffix: the last N bytes.
        (true, false) => match b.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => RangeRequest::Unsatisfiable,
            Ok(n) => partial(size.saturating_sub(n), size - 1),
            Err(_) => RangeRequest::Whole,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    _ => return RangeRequest::Whole,
                }
            };
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                partial(start, end.min(size - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        use RangeRequest::*;
        let p = |start, end| Partial(ByteRange { start, end });
        let table: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, Whole),
            (Some("bytes=0-4"), 10, p(0, 4)),
            (Some("bytes=5-"), 10, p(5, 9)),
            (Some("bytes=5-100"), 10, p(5, 9)),
            (Some("bytes=-3"), 10, p(7, 9)),
            (Some("bytes=-30"), 10, p(0, 9)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=0-1,3-4"), 10, Whole),
            (Some("bytes=4-2"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=x-1"), 10, Whole),
        ];
        for (h, size, want) in table {
            assert_eq!(parse_range(*h, *size), *want, "{h:?} of {size}");
        }
    }

    #[test]
    fn only_sha256_names_form_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = BundleStore::open(dir.path()).unwrap();
        assert!(s.path_of("../../etc/passwd").is_none());
        assert!(s.path_of(&"A".repeat(64)).is_none());
        assert!(s.path_of(&"a".repeat(64)).is_some());
    }

    #[tokio::test]
    async fn put_stores_by_hash_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let s = BundleStore::open(dir.path()).unwrap();
        let chunks = || {
            futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes_like::Bytes::from_static(b"hello ")),
                Ok(bytes_like::Bytes::from_static(b"world")),
            ])
        };
        let (sha, size) = s.put(chunks()).await.unwrap();
        assert_eq!(size, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        assert_eq!(
            std::fs::read(s.path_of(&sha).unwrap()).unwrap(),
            b"hello world"
        );
        let (again, _) = s.put(chunks()).await.unwrap();
        assert_eq!(again, sha);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
