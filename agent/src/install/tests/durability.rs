//! What Install makes durable: exactly the new files it wrote and the directories whose
//! entries it changed, never an unrelated file beside them.

use std::collections::BTreeSet;

use super::*;

fn set(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    paths.iter().cloned().collect()
}

#[test]
fn the_synced_set_is_the_new_files_and_the_directories_that_gained_entries() {
    let f = Fixture::new();
    f.bundle_file("app/a.txt", "a");
    f.bundle_file("app/sub/b.txt", "b");
    f.bundle_file("app/old.conf", "new contents");
    std::os::unix::fs::symlink("a.txt", f.bundle.join("app/link")).unwrap();
    f.bundle_file("conf/c.conf", "c");
    let unrelated = f.host_file("opt/unrelated.txt", "not ours");
    f.host_file("opt/old.conf", "old contents");
    f.host_file("srv/untouched/x", "x");

    let spec = spec(vec![
        ("app", f.host("opt")),
        ("conf/c.conf", f.host("srv/new/etc")),
    ]);
    let mut record = InstalledFiles::default();
    let written =
        install_files(&spec, &f.bundle, FileExistsBehavior::Overwrite, &mut record).unwrap();

    // The replaced file was synced before its rename; the symlink and directories are entries.
    assert_eq!(
        set(written.files()),
        set(&[
            f.host("opt/a.txt"),
            f.host("opt/sub/b.txt"),
            f.host("srv/new/etc/c.conf"),
        ])
    );
    assert_eq!(
        written.dirs(),
        &set(&[
            f.host("opt"),
            f.host("opt/sub"),
            f.host("srv"),
            f.host("srv/new"),
            f.host("srv/new/etc"),
        ])
    );
    assert!(!written.files().contains(&unrelated));
    let mut written = written;
    // Files first (before permissions apply), then what is left: the directories.
    assert_eq!(
        written.sync_files(SyncMode::Files).unwrap(),
        (3, SyncedBy::EachFile)
    );
    assert!(written.files().is_empty());
    assert_eq!(
        written.sync(SyncMode::Files).unwrap(),
        Synced { files: 0, dirs: 5 }
    );
    assert_eq!(read(&f.host("opt/old.conf")), "new contents");
}

#[test]
fn removing_the_previous_revision_syncs_the_directories_it_changed() {
    let f = Fixture::new();
    f.bundle_file("app/keep/k.txt", "k");
    f.bundle_file("app/gone/g.txt", "g");
    f.bundle_file("app/top.txt", "t");
    f.host_file("opt/preexisting.txt", "mine");
    let (result, first) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();
    let foreign = f.host_file("opt/app/keep/foreign.txt", "foreign");

    let written = remove_previous(&first).unwrap();

    // keep/ lost k.txt but stays (foreign.txt); gone/ lost g.txt and was removed from app/;
    // app/ lost top.txt and gone/; opt/ (which was there before) is unchanged.
    assert!(written.files().is_empty());
    assert_eq!(
        written.dirs(),
        &set(&[
            f.host("opt/app"),
            f.host("opt/app/gone"),
            f.host("opt/app/keep")
        ])
    );
    assert_eq!(read(&foreign), "foreign");
    assert!(!f.host("opt/app/gone").exists());
    // The removed directory is skipped: app/, its parent, holds its removal.
    assert_eq!(
        written.sync(SyncMode::Files).unwrap(),
        Synced { files: 0, dirs: 3 }
    );
}

#[test]
fn a_directory_removed_after_it_changed_is_skipped_when_syncing() {
    let f = Fixture::new();
    f.bundle_file("app/d/x", "x");
    let (result, first) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();
    let written = remove_previous(&first).unwrap();
    // The first install created opt/ too: d/ lost x, app/ lost d/, opt/ lost app/, and the
    // host directory lost opt/; only the last still exists.
    assert_eq!(
        written.dirs(),
        &set(&[
            f.host.clone(),
            f.host("opt"),
            f.host("opt/app"),
            f.host("opt/app/d")
        ])
    );
    assert!(!f.host("opt").exists());
    assert_eq!(
        written.sync(SyncMode::Files).unwrap(),
        Synced { files: 0, dirs: 4 }
    );
}

#[test]
fn a_file_that_cannot_be_synced_fails_the_sync_naming_it() {
    let f = Fixture::new();
    f.bundle_file("app/a.txt", "a");
    let (result, _) = f.install(&[("app", "opt")], FileExistsBehavior::Disallow);
    result.unwrap();
    let spec = spec(vec![("app", f.host("srv"))]);
    let mut record = InstalledFiles::default();
    let written =
        install_files(&spec, &f.bundle, FileExistsBehavior::Disallow, &mut record).unwrap();
    // Someone removes the file between its rename and the sync.
    fs::remove_file(f.host("srv/a.txt")).unwrap();
    let error = written.sync(SyncMode::Files).unwrap_err();
    assert!(
        matches!(&error, InstallError::Io { op: "syncing", path, .. } if *path == f.host("srv/a.txt")),
        "{error:?}"
    );
}

#[test]
fn the_filesystem_mode_syncs_the_new_files_with_one_syncfs() {
    let f = Fixture::new();
    f.bundle_file("app/a.txt", "a");
    f.bundle_file("app/sub/b.txt", "b");
    let spec = spec(vec![("app", f.host("opt"))]);
    let mut record = InstalledFiles::default();
    let mut written =
        install_files(&spec, &f.bundle, FileExistsBehavior::Disallow, &mut record).unwrap();
    assert_eq!(written.files().len(), 2);
    assert_eq!(
        written.sync_files(SyncMode::Filesystem).unwrap(),
        (2, SyncedBy::Filesystem)
    );
    assert!(written.files().is_empty());
    assert_eq!(
        written.sync(SyncMode::Filesystem).unwrap(),
        Synced { files: 0, dirs: 3 }
    );
}
