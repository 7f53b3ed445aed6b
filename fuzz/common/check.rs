//! The oracle the archive fuzz targets share: extract an archive into a fresh temporary
//! directory and check that nothing was written outside `dest/`.
//!
//! The archive is written to a fresh temporary directory beside an empty `outside/` directory
//! and extracted into `dest/`. Extraction may refuse the archive but must never panic, and
//! afterwards, whatever the outcome:
//! - the temporary directory holds exactly the archive, `outside/` (still empty) and `dest/`;
//! - every file and directory under `dest` (reached through real directories only) resolves
//!   inside `dest`; symlinks are leaves and may point anywhere (`logs -> /var/log`), but
//!   nothing was written through one: the `outside/` probe beside `dest` stays empty;
//! - every regular file's hard links are all inside `dest`.
//!
//! Caps are small so that each run stays fast; their own enforcement is tested in the agent.
//! It is not a fuzz target itself: `extract` and `extract_structured` include it with `#[path]`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hoist_agent::bundle::extract::{extract, ExtractLimits};

/// Extracts `archive` (the bytes of a whole archive file) and panics if anything was written
/// outside `dest` (see the file's header).
pub fn extract_and_check(archive_bytes: &[u8]) {
    // A memory file system, where there is one, doubles the runs per second.
    let shm = Path::new("/dev/shm");
    let temp = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let root = fs::canonicalize(temp.path()).expect("canonical temp dir");
    let archive = root.join("bundle");
    let outside = root.join("outside");
    let dest = root.join("dest");
    fs::write(&archive, archive_bytes).expect("write archive");
    fs::create_dir(&outside).expect("create outside");
    let limits = ExtractLimits {
        max_total_bytes: 1 << 20,
        max_entries: 512,
        ..ExtractLimits::default()
    };
    let _ = extract(&archive, &dest, &limits);

    let mut top: Vec<String> = fs::read_dir(&root)
        .expect("list temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    let expected: &[&str] = if dest.exists() {
        &["bundle", "dest", "outside"]
    } else {
        &["bundle", "outside"]
    };
    assert_eq!(top, expected, "something was written beside dest");
    assert_eq!(
        fs::read_dir(&outside).expect("list outside").count(),
        0,
        "something was written into outside/"
    );
    if dest.exists() {
        check_tree(&dest);
    }
    // Extraction may leave read-only directories behind; make them removable.
    restore_write(&dest);
}

/// Checks symlinks and hard links under `dest` (see the file's header).
fn check_tree(dest: &Path) {
    let mut links: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("list dest") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                // A leaf: where it points is not checked, only that nothing went through it.
                continue;
            } else if meta.is_dir() {
                stack.push(path.clone());
            } else if meta.is_file() {
                let seen = links.entry(meta.ino()).or_insert((0, meta.nlink()));
                seen.0 += 1;
            } else {
                panic!("{} is neither file, directory nor symlink", path.display());
            }
            if let Ok(real) = fs::canonicalize(&path) {
                assert!(
                    real.starts_with(dest),
                    "{} resolves to {} outside dest",
                    path.display(),
                    real.display()
                );
            }
        }
    }
    for (inode, (found, nlink)) in links {
        assert_eq!(found, nlink, "inode {inode} has hard links outside dest");
    }
}

fn restore_write(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            restore_write(&entry.path());
        }
    }
}
