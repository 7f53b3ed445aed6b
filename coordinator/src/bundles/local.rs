//! The bundle store in a local directory: `DATA_DIR/bundles/ab/abcd…` keyed by the sha256
//! of the bytes, read whole or by a [`ByteRange`].
//!
//! An upload streams into a temp file under `DATA_DIR/bundles/tmp` while hashing, then is
//! fsynced and renamed to its hash; a bundle is never held whole in memory. Not here: the
//! choice between this and S3 (`super`), HTTP, or who may read a bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, Take};

use super::{io, valid_sha256, BundleError, ByteRange};

#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// Opens the store under `dir`, creating it when missing.
    pub fn open(dir: &Path) -> Result<LocalStore, BundleError> {
        std::fs::create_dir_all(dir.join("tmp")).map_err(io("creating", dir))?;
        Ok(LocalStore {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the bundle with this hash lives (whether or not it exists); `None` for a name
    /// that is not a sha256, so no path outside the store can be formed.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        valid_sha256(sha256).then(|| self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Opens the bundle named `sha256` for reading; `Ok(None)` when the store has none by
    /// that name.
    pub async fn open_bundle(&self, sha256: &str) -> std::io::Result<Option<LocalBundle>> {
        let Some(path) = self.path_of(sha256) else {
            return Ok(None);
        };
        let Ok(file) = tokio::fs::File::open(&path).await else {
            return Ok(None);
        };
        let size = file.metadata().await?.len();
        Ok(Some(LocalBundle { file, size }))
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
    pub async fn put<S, B, E>(&self, body: S) -> Result<(String, u64), BundleError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let spooled = spool(&self.dir.join("tmp"), body).await?;
        let (sha256, size) = (spooled.sha256.clone(), spooled.size);
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.commit(spooled.file, spooled.path, &spooled.sha256)
        })
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

/// A body written to a temp file while hashed; the file is removed when `path` drops.
pub(super) struct Spooled {
    pub file: std::fs::File,
    pub path: tempfile::TempPath,
    pub sha256: String,
    pub size: u64,
}

/// Streams `body` into a new temp file in `tmp_dir`, hashing it on the way.
pub(super) async fn spool<S, B, E>(tmp_dir: &Path, mut body: S) -> Result<Spooled, BundleError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::error::Error + Send + Sync + 'static,
{
    let tmp = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(tmp_dir)
        .map_err(io("creating a temp file in", tmp_dir))?;
    let (std_file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BundleError::Body(Box::new(e)))?;
        let chunk = chunk.as_ref();
        hasher.update(chunk);
        size += chunk.len() as u64;
        file.write_all(chunk).await.map_err(io("writing", &path))?;
    }
    file.flush().await.map_err(io("writing", &path))?;
    Ok(Spooled {
        file: file.into_std().await,
        path,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// A stored bundle opened for reading.
#[derive(Debug)]
pub struct LocalBundle {
    file: tokio::fs::File,
    size: u64,
}

impl LocalBundle {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A reader of the bytes of `range`, or of the whole bundle for `None`; a range that
    /// does not lie inside the bundle is an `InvalidInput` error.
    pub async fn read(
        mut self,
        range: Option<ByteRange>,
    ) -> std::io::Result<Take<tokio::fs::File>> {
        let (start, len) = match range {
            None => (0, self.size),
            Some(r) if r.start <= r.end && r.end < self.size => (r.start, r.byte_count()),
            Some(r) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "bytes {}-{} are not inside the bundle's {} bytes",
                        r.start, r.end, self.size
                    ),
                ))
            }
        };
        self.file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok(self.file.take(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_names_form_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert!(s.path_of("../../etc/passwd").is_none());
        assert!(s.path_of(&"A".repeat(64)).is_none());
        assert!(s.path_of(&"a".repeat(64)).is_some());
    }

    #[tokio::test]
    async fn put_stores_by_hash_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let chunks = || {
            futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(b"hello ".as_slice()),
                Ok(b"world".as_slice()),
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

    #[tokio::test]
    async fn a_stored_bundle_reads_whole_or_by_range_and_refuses_a_range_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let body =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(b"0123456789".as_slice())]);
        let (sha, _) = s.put(body).await.unwrap();
        assert!(s.open_bundle(&"b".repeat(64)).await.unwrap().is_none());
        assert!(s.open_bundle("../../etc/passwd").await.unwrap().is_none());
        let read = |range| {
            let s = s.clone();
            let sha = sha.clone();
            async move {
                let bundle = s.open_bundle(&sha).await.unwrap().unwrap();
                assert_eq!(bundle.size(), 10);
                let mut out = Vec::new();
                bundle.read(range).await?.read_to_end(&mut out).await?;
                std::io::Result::Ok(out)
            }
        };
        assert_eq!(read(None).await.unwrap(), b"0123456789");
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(read(r(2, 4)).await.unwrap(), b"234");
        assert_eq!(read(r(9, 9)).await.unwrap(), b"9");
        for outside in [r(5, 10), r(10, 12), r(4, 2)] {
            let e = read(outside).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{outside:?}");
        }
    }
}
