//! Tests of the Install event against real files in temp directories (and, as root, real
//! users, groups and ACLs).

#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::fs::{self, File, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, SystemTime};

use hoist_appspec::{FileMapping, ObjectType, Permission, SelinuxContext};
use nix::unistd::{Group, User};

use super::files::execute;
use super::permissions::{apply_permissions_searching, find_tool, simple_glob};
use super::plan::{CopyKind, Op};
use super::*;

mod durability;
mod properties;

/// A bundle directory and a host directory standing in for `/`.
struct Fixture {
    _temp: tempfile::TempDir,
    bundle: PathBuf,
    host: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let bundle = temp.path().join("bundle");
        let host = temp.path().join("host");
        fs::create_dir(&bundle).unwrap();
        fs::create_dir(&host).unwrap();
        Fixture {
            _temp: temp,
            bundle,
            host,
        }
    }

    fn bundle_file(&self, relative: &str, contents: &str) -> PathBuf {
        write(&self.bundle.join(relative), contents)
    }

    fn host_file(&self, relative: &str, contents: &str) -> PathBuf {
        write(&self.host.join(relative), contents)
    }

    fn host(&self, relative: &str) -> PathBuf {
        self.host.join(relative)
    }

    fn install(
        &self,
        files: &[(&str, &str)],
        behavior: FileExistsBehavior,
    ) -> (Result<(), InstallError>, InstalledFiles) {
        let spec = spec(
            files
                .iter()
                .map(|(source, destination)| (*source, self.host(destination)))
                .collect(),
        );
        let mut record = InstalledFiles::default();
        let result = install_files(&spec, &self.bundle, behavior, &mut record).map(drop);
        (result, record)
    }
}

fn write(path: &Path, contents: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
    path.to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

fn spec(files: Vec<(&str, PathBuf)>) -> AppSpec {
    AppSpec {
        version: "0.0".into(),
        os: "linux".into(),
        files: files
            .into_iter()
            .map(|(source, destination)| FileMapping {
                source: source.into(),
                destination,
            })
            .collect(),
        ..AppSpec::default()
    }
}

fn entries(record: &InstalledFiles) -> Vec<(PathBuf, EntryKind)> {
    record
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.kind))
        .collect()
}

/// Every path below `dir`, relative, sorted (directories with a trailing slash).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push(format!("{relative}/"));
                walk(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn directory_source_merges_its_contents_into_the_destination() {
    let f = Fixture::new();
    f.bundle_file("app/bin/run.sh", "run");
    f.bundle_file("app/conf/app.yml", "conf");
    f.host_file("opt/app/bin/local.sh", "local");

    let (result, record) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();

    assert_eq!(
        tree(&f.host("opt/app")),
        [
            "bin/",
            "bin/local.sh",
            "bin/run.sh",
            "conf/",
            "conf/app.yml"
        ]
    );
    assert_eq!(read(&f.host("opt/app/bin/run.sh")), "run");
    assert_eq!(read(&f.host("opt/app/bin/local.sh")), "local");
    assert_eq!(
        entries(&record),
        [
            (f.host("opt/app/bin/run.sh"), EntryKind::File),
            (f.host("opt/app/conf"), EntryKind::Directory),
            (f.host("opt/app/conf/app.yml"), EntryKind::File),
        ]
    );
}

#[test]
fn file_source_lands_as_destination_slash_file_name() {
    let f = Fixture::new();
    f.bundle_file("config/app.conf", "conf");
    fs::create_dir_all(f.host("etc")).unwrap();

    let (result, record) = f.install(&[("config/app.conf", "etc")], FileExistsBehavior::Disallow);
    result.unwrap();

    assert_eq!(read(&f.host("etc/app.conf")), "conf");
    assert_eq!(
        entries(&record),
        [(f.host("etc/app.conf"), EntryKind::File)]
    );
}

#[test]
fn missing_ancestors_are_created_and_recorded_but_existing_ones_are_not() {
    let f = Fixture::new();
    f.bundle_file("a.txt", "a");
    f.bundle_file("tree/x/y.txt", "y");
    fs::create_dir_all(f.host("srv")).unwrap();

    let (result, record) = f.install(
        &[("a.txt", "srv/one/two"), ("tree", "srv/one/three")],
        FileExistsBehavior::Disallow,
    );
    result.unwrap();

    assert_eq!(read(&f.host("srv/one/two/a.txt")), "a");
    assert_eq!(read(&f.host("srv/one/three/x/y.txt")), "y");
    assert_eq!(
        entries(&record),
        [
            (f.host("srv/one"), EntryKind::Directory),
            (f.host("srv/one/two"), EntryKind::Directory),
            (f.host("srv/one/two/a.txt"), EntryKind::File),
            (f.host("srv/one/three"), EntryKind::Directory),
            (f.host("srv/one/three/x"), EntryKind::Directory),
            (f.host("srv/one/three/x/y.txt"), EntryKind::File),
        ]
    );
}

#[test]
fn whole_bundle_source_copies_everything_including_the_appspec() {
    for source in ["/", ""] {
        let f = Fixture::new();
        f.bundle_file("appspec.yml", "version: 0.0");
        f.bundle_file("web/index.html", "hi");

        let (result, _) = f.install(&[(source, "var/www")], FileExistsBehavior::Disallow);
        result.unwrap();

        assert_eq!(
            tree(&f.host("var/www")),
            ["appspec.yml", "web/", "web/index.html"],
            "source {source:?}"
        );
    }
}

#[test]
fn second_deployment_removes_what_the_first_installed() {
    let f = Fixture::new();
    f.bundle_file("app/old.txt", "old");
    f.bundle_file("app/keep/k.txt", "k");
    f.bundle_file("app/gone/g.txt", "g");
    let preexisting = f.host_file("opt/preexisting.txt", "mine");

    let (result, first) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();
    // Someone else puts a file into a directory the first deployment created.
    let foreign = f.host_file("opt/app/keep/foreign.txt", "foreign");

    remove_previous(&first).unwrap();

    assert_eq!(
        tree(&f.host("opt")),
        [
            "app/",
            "app/keep/",
            "app/keep/foreign.txt",
            "preexisting.txt"
        ]
    );
    assert_eq!(read(&preexisting), "mine");
    assert_eq!(read(&foreign), "foreign");

    // The new revision installs over the leftovers without conflicts.
    fs::remove_dir_all(f.bundle.join("app")).unwrap();
    f.bundle_file("app/keep/k.txt", "k2");
    f.bundle_file("app/new.txt", "new");
    let (result, second) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();
    assert_eq!(read(&f.host("opt/app/keep/k.txt")), "k2");
    assert_eq!(
        entries(&second),
        [
            (f.host("opt/app/keep/k.txt"), EntryKind::File),
            (f.host("opt/app/new.txt"), EntryKind::File),
        ]
    );
}

#[test]
fn remove_previous_ignores_missing_paths() {
    let f = Fixture::new();
    let record = InstalledFiles::new(vec![
        InstalledEntry {
            path: f.host("no/dir"),
            kind: EntryKind::Directory,
        },
        InstalledEntry {
            path: f.host("no/dir/file"),
            kind: EntryKind::File,
        },
        InstalledEntry {
            path: f.host("no/dir/link"),
            kind: EntryKind::Symlink,
        },
    ]);
    remove_previous(&record).unwrap();
    assert!(f.host.exists());
}

#[test]
fn remove_previous_removes_symlinks_not_their_targets() {
    let f = Fixture::new();
    let target = f.host_file("data/target.txt", "t");
    std::os::unix::fs::symlink(&target, f.host("link")).unwrap();
    let record = InstalledFiles::new(vec![InstalledEntry {
        path: f.host("link"),
        kind: EntryKind::Symlink,
    }]);
    remove_previous(&record).unwrap();
    assert!(fs::symlink_metadata(f.host("link")).is_err());
    assert_eq!(read(&target), "t");
}

#[test]
fn disallow_names_the_existing_path_and_installs_nothing() {
    let f = Fixture::new();
    f.bundle_file("first/a.txt", "a");
    f.bundle_file("second/b.txt", "new");
    f.host_file("opt/b/b.txt", "existing");

    let (result, record) = f.install(
        &[("first", "opt/a/deep"), ("second", "opt/b")],
        FileExistsBehavior::Disallow,
    );

    match result {
        Err(InstallError::Exists { path }) => assert_eq!(path, f.host("opt/b/b.txt")),
        other => panic!("expected Exists, got {other:?}"),
    }
    let message = InstallError::Exists {
        path: f.host("opt/b/b.txt"),
    }
    .to_string();
    assert!(message.contains("opt/b/b.txt") && message.contains("DISALLOW"));
    assert!(record.entries.is_empty());
    assert!(!f.host("opt/a").exists(), "nothing may be written");
    assert_eq!(read(&f.host("opt/b/b.txt")), "existing");
}

#[test]
fn existing_symlink_counts_as_an_existing_file() {
    let f = Fixture::new();
    f.bundle_file("app/x", "x");
    fs::create_dir_all(f.host("opt")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", f.host("opt/x")).unwrap();

    let (result, _) = f.install(&[("app", "opt")], FileExistsBehavior::Disallow);
    assert!(
        matches!(result, Err(InstallError::Exists { .. })),
        "{result:?}"
    );

    let (result, record) = f.install(&[("app", "opt")], FileExistsBehavior::Overwrite);
    result.unwrap();
    assert!(fs::symlink_metadata(f.host("opt/x")).unwrap().is_file());
    assert_eq!(entries(&record), [(f.host("opt/x"), EntryKind::File)]);
}

#[test]
fn overwrite_replaces_and_records_the_file() {
    let f = Fixture::new();
    f.bundle_file("app/c.conf", "new");
    f.host_file("etc/app/c.conf", "old");

    let (result, record) = f.install(&[("app", "etc/app")], FileExistsBehavior::Overwrite);
    result.unwrap();

    assert_eq!(read(&f.host("etc/app/c.conf")), "new");
    assert_eq!(
        entries(&record),
        [(f.host("etc/app/c.conf"), EntryKind::File)]
    );
}

#[test]
fn retain_keeps_the_existing_file_and_does_not_record_it() {
    let f = Fixture::new();
    f.bundle_file("app/c.conf", "new");
    f.bundle_file("app/other", "other");
    f.host_file("etc/app/c.conf", "old");

    let (result, record) = f.install(&[("app", "etc/app")], FileExistsBehavior::Retain);
    result.unwrap();

    assert_eq!(read(&f.host("etc/app/c.conf")), "old");
    assert_eq!(read(&f.host("etc/app/other")), "other");
    assert_eq!(
        entries(&record),
        [(f.host("etc/app/other"), EntryKind::File)]
    );
}

#[test]
fn the_behavior_argument_wins_over_the_appspec_value() {
    // The caller resolves precedence; install_files does what it is told.
    let f = Fixture::new();
    f.bundle_file("app/c.conf", "new");
    f.host_file("etc/c.conf", "old");
    let mut spec = spec(vec![("app", f.host("etc"))]);
    spec.file_exists_behavior = Some(FileExistsBehavior::Disallow);

    let mut record = InstalledFiles::default();
    install_files(&spec, &f.bundle, FileExistsBehavior::Overwrite, &mut record).unwrap();
    assert_eq!(read(&f.host("etc/c.conf")), "new");

    spec.file_exists_behavior = Some(FileExistsBehavior::Overwrite);
    fs::write(f.host("etc/c.conf"), "old").unwrap();
    let result = install_files(&spec, &f.bundle, FileExistsBehavior::Disallow, &mut record);
    assert!(
        matches!(result, Err(InstallError::Exists { .. })),
        "{result:?}"
    );
}

#[test]
fn conflicts_within_one_appspec_are_errors() {
    let f = Fixture::new();
    f.bundle_file("a/same.txt", "a");
    f.bundle_file("b/same.txt", "b");
    f.bundle_file("c/same.txt/inner", "c");

    let (result, record) = f.install(&[("a", "opt"), ("b", "opt")], FileExistsBehavior::Overwrite);
    match result {
        Err(InstallError::DuplicateTarget {
            path,
            first,
            second,
        }) => {
            assert_eq!(path, f.host("opt/same.txt"));
            assert_eq!(first, "files[0] a/same.txt");
            assert_eq!(second, "files[1] b/same.txt");
        }
        other => panic!("expected DuplicateTarget, got {other:?}"),
    }
    assert!(record.entries.is_empty());
    assert!(!f.host("opt").exists());

    let (result, _) = f.install(
        &[("a/same.txt", "opt"), ("a/same.txt", "opt")],
        FileExistsBehavior::Overwrite,
    );
    assert!(
        matches!(result, Err(InstallError::DuplicateTarget { .. })),
        "{result:?}"
    );

    // One entry installs a file where another needs a directory, in either order.
    for files in [[("a", "opt"), ("c", "opt")], [("c", "opt"), ("a", "opt")]] {
        let (result, _) = f.install(&files, FileExistsBehavior::Overwrite);
        match result {
            Err(InstallError::FileDirectoryClash { path, .. }) => {
                assert_eq!(path, f.host("opt/same.txt"))
            }
            other => panic!("expected FileDirectoryClash for {files:?}, got {other:?}"),
        }
    }
}

#[test]
fn file_and_directory_kinds_must_match_what_exists() {
    let f = Fixture::new();
    f.bundle_file("app/thing", "file");
    f.bundle_file("tree/thing/inner", "inner");
    fs::create_dir_all(f.host("dir-here/thing")).unwrap();
    f.host_file("file-here/thing", "existing");

    for behavior in [
        FileExistsBehavior::Disallow,
        FileExistsBehavior::Overwrite,
        FileExistsBehavior::Retain,
    ] {
        let (result, _) = f.install(&[("app", "dir-here")], behavior);
        match result {
            Err(InstallError::TargetIsDirectory { path, from }) => {
                assert_eq!(path, f.host("dir-here/thing"));
                assert_eq!(from, "files[0] app/thing");
            }
            other => panic!("expected TargetIsDirectory, got {other:?}"),
        }
        let (result, _) = f.install(&[("tree", "file-here")], behavior);
        match result {
            Err(InstallError::TargetNotDirectory { path, .. }) => {
                assert_eq!(path, f.host("file-here/thing"))
            }
            other => panic!("expected TargetNotDirectory, got {other:?}"),
        }
    }

    // An ancestor that is a file.
    let (result, _) = f.install(
        &[("app", "file-here/thing/deeper")],
        FileExistsBehavior::Overwrite,
    );
    match result {
        Err(InstallError::TargetNotDirectory { path, .. }) => {
            assert_eq!(path, f.host("file-here/thing"))
        }
        other => panic!("expected TargetNotDirectory, got {other:?}"),
    }
    assert_eq!(read(&f.host("file-here/thing")), "existing");
}

#[test]
fn destination_through_a_symlinked_directory_is_merged() {
    let f = Fixture::new();
    f.bundle_file("app/a", "a");
    fs::create_dir_all(f.host("real")).unwrap();
    std::os::unix::fs::symlink(f.host("real"), f.host("linked")).unwrap();

    let (result, record) = f.install(&[("app", "linked")], FileExistsBehavior::Disallow);
    result.unwrap();
    assert_eq!(read(&f.host("real/a")), "a");
    assert_eq!(entries(&record), [(f.host("linked/a"), EntryKind::File)]);
}

#[test]
fn bad_sources_name_the_files_entry() {
    let f = Fixture::new();
    f.bundle_file("app/a", "a");
    let outside = f.host_file("secret/s", "s");
    std::os::unix::fs::symlink(outside.parent().unwrap(), f.bundle.join("escape")).unwrap();

    let cases: &[(&str, &str)] = &[
        ("../host/secret", "is outside the bundle"),
        ("app/../../host", "is outside the bundle"),
        ("escape/s", "is outside the bundle"),
        ("missing", "does not exist in the bundle"),
        ("app/missing/deeper", "does not exist in the bundle"),
    ];
    for (source, expected) in cases {
        let (result, record) = f.install(
            &[("app", "opt"), (source, "opt")],
            FileExistsBehavior::Overwrite,
        );
        let message = result.unwrap_err().to_string();
        assert_eq!(
            message,
            format!("files[1].source {source:?} {expected}"),
            "source {source:?}"
        );
        assert!(record.entries.is_empty());
    }
    assert!(!f.host("opt").exists());

    // `..` that stays inside the bundle is fine.
    let (result, _) = f.install(&[("app/../app/a", "opt")], FileExistsBehavior::Overwrite);
    result.unwrap();
    assert_eq!(read(&f.host("opt/a")), "a");
}

/// Install takes `destination` and `object` as absolute without checking again: the
/// parser, through which every appspec the agent acts on comes, refuses a relative one.
#[test]
fn relative_destination_is_rejected() {
    let text = "version: 0.0\nos: linux\nfiles:\n  - source: a\n    destination: relative/dir\npermissions:\n  - object: relative/obj\n";
    let invalid = hoist_appspec::parse(text).unwrap_err();
    let errors: Vec<String> = invalid.errors.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        errors,
        [
            "files[0].destination: must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got \"relative/dir\")",
            "permissions[0].object: must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got \"relative/obj\")",
        ]
    );
}

#[test]
fn symlinks_are_installed_as_symlinks() {
    let f = Fixture::new();
    f.bundle_file("app/real.txt", "real");
    std::os::unix::fs::symlink("real.txt", f.bundle.join("app/rel-link")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", f.bundle.join("app/dangling")).unwrap();
    std::os::unix::fs::symlink("sub", f.bundle.join("app/dir-link")).unwrap();
    f.bundle_file("app/sub/inner", "inner");
    std::os::unix::fs::symlink("app/real.txt", f.bundle.join("top-link")).unwrap();
    f.host_file("opt/dangling", "existing");

    let (result, record) = f.install(
        &[("app", "opt"), ("top-link", "etc")],
        FileExistsBehavior::Overwrite,
    );
    result.unwrap();

    for (path, text) in [
        ("opt/rel-link", "real.txt"),
        ("opt/dangling", "/does/not/exist"),
        ("opt/dir-link", "sub"),
        ("etc/top-link", "app/real.txt"),
    ] {
        let meta = fs::symlink_metadata(f.host(path)).unwrap();
        assert!(meta.file_type().is_symlink(), "{path} is a symlink");
        assert_eq!(fs::read_link(f.host(path)).unwrap(), Path::new(text));
    }
    assert_eq!(read(&f.host("opt/rel-link")), "real");
    assert!(record.entries.contains(&InstalledEntry {
        path: f.host("opt/dir-link"),
        kind: EntryKind::Symlink
    }));
    assert!(tree(&f.host.clone())
        .iter()
        .all(|p| !p.contains(".hoist-tmp")));
}

#[test]
fn mode_and_mtime_are_preserved_and_no_temp_files_are_left() {
    let f = Fixture::new();
    let script = f.bundle_file("app/run.sh", "#!/bin/sh\n");
    let secret = f.bundle_file("app/secret", "s");
    fs::set_permissions(&script, Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(&secret, Permissions::from_mode(0o600)).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    File::options()
        .write(true)
        .open(&script)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    f.host_file("opt/secret", "old");

    let (result, _) = f.install(&[("app", "opt")], FileExistsBehavior::Overwrite);
    result.unwrap();

    let meta = fs::metadata(f.host("opt/run.sh")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4751);
    assert_eq!(meta.modified().unwrap(), mtime);
    assert_eq!(
        fs::metadata(f.host("opt/secret")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(tree(&f.host("opt")), ["run.sh", "secret"]);
}

#[test]
fn failure_half_way_keeps_an_accurate_record() {
    let f = Fixture::new();
    let ops = vec![
        Op::Mkdir {
            path: f.host("made"),
        },
        Op::Copy {
            source: f.bundle_file("a", "a"),
            target: f.host("made/a"),
            kind: CopyKind::File,
            replace: false,
        },
        // The source vanished after planning.
        Op::Copy {
            source: f.bundle.join("vanished"),
            target: f.host("made/b"),
            kind: CopyKind::File,
            replace: false,
        },
    ];
    let mut record = InstalledFiles::default();
    let result = execute(&ops, &mut record);
    assert!(
        matches!(result, Err(InstallError::Io { op: "opening", .. })),
        "{result:?}"
    );
    assert_eq!(
        entries(&record),
        [
            (f.host("made"), EntryKind::Directory),
            (f.host("made/a"), EntryKind::File),
        ]
    );
    assert_eq!(tree(&f.host("made")), ["a"]);
}

fn permission(object: PathBuf) -> Permission {
    Permission {
        object,
        pattern: "**".into(),
        except: Vec::new(),
        types: vec![ObjectType::File, ObjectType::Directory],
        owner: None,
        group: None,
        mode: None,
        acls: Vec::new(),
        context: None,
    }
}

/// Installs `app/` of a fixed bundle to `<host>/opt/app` (created) and returns the record.
fn installed_tree(f: &Fixture) -> InstalledFiles {
    for path in [
        "app/a.sh",
        "app/b.txt",
        "app/.hidden",
        "app/sub/c.sh",
        "app/sub/deep/d.txt",
    ] {
        let file = f.bundle_file(path, path);
        fs::set_permissions(file, Permissions::from_mode(0o600)).unwrap();
    }
    std::os::unix::fs::symlink("a.sh", f.bundle.join("app/link")).unwrap();
    let (result, record) = f.install(&[("app", "opt/app")], FileExistsBehavior::Disallow);
    result.unwrap();
    record
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn mode_follows_object_pattern_except_and_type() {
    // (description, object, pattern, except, types, paths expected to get 0o751)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [ObjectType],
        &'static [&'static str],
    );
    use ObjectType::{Directory as D, File as F};
    let cases: &[Case] = &[
        (
            "everything below, never the object itself",
            "opt/app",
            "**",
            &[],
            &[F, D],
            &[
                "a.sh",
                "b.txt",
                ".hidden",
                "sub",
                "sub/c.sh",
                "sub/deep",
                "sub/deep/d.txt",
            ],
        ),
        (
            "files only",
            "opt/app",
            "**",
            &[],
            &[F],
            &["a.sh", "b.txt", ".hidden", "sub/c.sh", "sub/deep/d.txt"],
        ),
        (
            "directories only",
            "opt/app",
            "**",
            &[],
            &[D],
            &["sub", "sub/deep"],
        ),
        (
            "a pattern matches direct children only",
            "opt/app",
            "*.sh",
            &[],
            &[F],
            &["a.sh"],
        ),
        (
            "* matches leading dots",
            "opt/app",
            "*",
            &[],
            &[F],
            &["a.sh", "b.txt", ".hidden"],
        ),
        ("? is literal", "opt/app", "?.sh", &[], &[F], &[]),
        (
            "except removes direct children",
            "opt/app",
            "**",
            &["*.txt", "sub"],
            &[F, D],
            &["a.sh", ".hidden", "sub/c.sh", "sub/deep", "sub/deep/d.txt"],
        ),
        (
            "nested object",
            "opt/app/sub",
            "**",
            &[],
            &[F, D],
            &["sub/c.sh", "sub/deep", "sub/deep/d.txt"],
        ),
        ("file object", "opt/app/b.txt", "**", &[], &[F], &["b.txt"]),
        (
            "file object but type directory",
            "opt/app/b.txt",
            "**",
            &[],
            &[D],
            &[],
        ),
        (
            "existing directory not created by hoist",
            "opt",
            "**",
            &[],
            &[D],
            &["app", "app/sub", "app/sub/deep"],
        ),
        ("object not installed", "elsewhere", "**", &[], &[F, D], &[]),
        // `link` points at a.sh; changing the link's mode would change a.sh.
        (
            "a symlink is not followed",
            "opt/app",
            "link",
            &[],
            &[F],
            &[],
        ),
    ];
    for (description, object, pattern, except, types, expected) in cases {
        let f = Fixture::new();
        let record = installed_tree(&f);
        let app = f.host("opt/app");
        // Directories start at 0o700 so a change is visible.
        for dir in [
            f.host("opt/app"),
            f.host("opt/app/sub"),
            f.host("opt/app/sub/deep"),
        ] {
            fs::set_permissions(dir, Permissions::from_mode(0o700)).unwrap();
        }
        let mut p = permission(f.host(object));
        p.pattern = pattern.to_string();
        p.except = except.iter().map(|e| e.to_string()).collect();
        p.types = types.to_vec();
        p.mode = Some(0o751);
        let spec = AppSpec {
            permissions: vec![p],
            ..AppSpec::default()
        };
        apply_permissions(&spec, &record).unwrap();

        let expected: Vec<PathBuf> = expected
            .iter()
            .map(|e| {
                if object.starts_with("opt/app") {
                    app.join(e)
                } else {
                    f.host("opt").join(e)
                }
            })
            .collect();
        for path in [
            "",
            "a.sh",
            "b.txt",
            ".hidden",
            "sub",
            "sub/c.sh",
            "sub/deep",
            "sub/deep/d.txt",
        ] {
            let path = app.join(path);
            let path = normalize(&path);
            let mode = mode_of(&path);
            if expected.contains(&path) {
                assert_eq!(
                    mode,
                    0o751,
                    "{description}: {} should change",
                    path.display()
                );
            } else {
                assert_ne!(
                    mode,
                    0o751,
                    "{description}: {} should not change",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn file_object_rejects_patterns_and_excepts() {
    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut p = permission(f.host("opt/app/a.sh"));
    p.pattern = "*.sh".into();
    let spec = AppSpec {
        permissions: vec![p.clone()],
        ..AppSpec::default()
    };
    let message = apply_permissions(&spec, &record).unwrap_err().to_string();
    assert!(
        message.contains("permissions[0].pattern \"*.sh\" cannot apply to a file object"),
        "{message}"
    );

    p.pattern = "**".into();
    p.except = vec!["x".into()];
    let spec = AppSpec {
        permissions: vec![p],
        ..AppSpec::default()
    };
    let message = apply_permissions(&spec, &record).unwrap_err().to_string();
    assert!(
        message.contains("permissions[0].except cannot apply to a file object"),
        "{message}"
    );
}

#[test]
fn a_path_matched_by_two_entries_is_an_error_and_nothing_changes() {
    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut first = permission(f.host("opt/app"));
    first.mode = Some(0o700);
    let mut second = permission(f.host("opt/app/sub"));
    second.mode = Some(0o755);
    let spec = AppSpec {
        permissions: vec![first, second],
        ..AppSpec::default()
    };
    let message = apply_permissions(&spec, &record).unwrap_err().to_string();
    assert!(
        message.contains("matched by both permissions[0] and permissions[1]"),
        "{message}"
    );
    assert_eq!(mode_of(&f.host("opt/app/a.sh")), 0o600);
}

#[test]
fn unknown_user_or_group_is_named() {
    let f = Fixture::new();
    let record = installed_tree(&f);
    for (owner, group, expected) in [
        (
            Some("hoist-no-such-user"),
            None,
            "unknown user \"hoist-no-such-user\"",
        ),
        (
            None,
            Some("hoist-no-such-group"),
            "unknown group \"hoist-no-such-group\"",
        ),
    ] {
        let mut p = permission(f.host("opt/app"));
        p.owner = owner.map(String::from);
        p.group = group.map(String::from);
        p.mode = Some(0o777);
        let spec = AppSpec {
            permissions: vec![p],
            ..AppSpec::default()
        };
        let message = apply_permissions(&spec, &record).unwrap_err().to_string();
        assert!(message.contains(expected), "{message}");
        assert_eq!(mode_of(&f.host("opt/app/a.sh")), 0o600, "nothing changes");
    }
}

/// A user and a group made for one test, removed when dropped.
struct TestAccount {
    name: String,
}

impl TestAccount {
    fn create(purpose: &str) -> Self {
        let name = format!("hoist-t-{purpose}-{}", std::process::id());
        let account = TestAccount { name };
        let status = Command::new("groupadd")
            .arg(&account.name)
            .status()
            .unwrap();
        assert!(status.success(), "groupadd {}", account.name);
        let status = Command::new("useradd")
            .args(["-M", "-N", "-g", &account.name, "-s", "/usr/sbin/nologin"])
            .arg(&account.name)
            .status()
            .unwrap();
        assert!(status.success(), "useradd {}", account.name);
        account
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        // userdel usually removes the same-named primary group too; groupdel covers the rest.
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
#[ignore = "needs root: useradd and chown"]
fn owner_and_group_are_set_by_name_and_setuid_survives_chown() {
    assert!(is_root(), "needs root for useradd and chown");
    let account = TestAccount::create("own");
    let user = User::from_name(&account.name).unwrap().unwrap();
    let group = Group::from_name(&account.name).unwrap().unwrap();

    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut p = permission(f.host("opt/app"));
    p.except = vec!["b.txt".into()];
    p.owner = Some(account.name.clone());
    p.group = Some(account.name.clone());
    p.mode = Some(0o4750);
    let spec = AppSpec {
        permissions: vec![p],
        ..AppSpec::default()
    };
    apply_permissions(&spec, &record).unwrap();

    for path in ["a.sh", "sub", "sub/c.sh", "link"] {
        let meta = fs::symlink_metadata(f.host("opt/app").join(path)).unwrap();
        assert_eq!(meta.uid(), user.uid.as_raw(), "{path} owner");
        assert_eq!(meta.gid(), group.gid.as_raw(), "{path} group");
    }
    assert_eq!(
        mode_of(&f.host("opt/app/a.sh")),
        0o4750,
        "setuid kept after chown"
    );
    let untouched = fs::metadata(f.host("opt/app/b.txt")).unwrap();
    assert_eq!(untouched.uid(), 0);
    assert_eq!(mode_of(&f.host("opt/app/b.txt")), 0o600);
}

fn getfacl(path: &Path) -> String {
    let output = Command::new("getfacl")
        .args(["--omit-header", "--numeric"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn has_tool(tool: &'static str) -> bool {
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    find_tool(&search_path, tool, "", Path::new("/")).is_ok()
}

#[test]
#[ignore = "needs setfacl and getfacl (apt-get install -y acl)"]
fn acls_are_applied_with_setfacl() {
    assert!(
        has_tool("setfacl") && has_tool("getfacl"),
        "setfacl/getfacl missing (apt-get install -y acl)"
    );
    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut files = permission(f.host("opt/app"));
    files.types = vec![ObjectType::File];
    files.pattern = "*.sh".into();
    files.acls = vec!["u:65534:r".into(), "g:65534:rw".into()];
    let mut dirs = permission(f.host("opt/app"));
    dirs.types = vec![ObjectType::Directory];
    dirs.acls = vec!["u:65534:rx".into(), "d:u:65534:rwx".into()];
    let spec = AppSpec {
        permissions: vec![files, dirs],
        ..AppSpec::default()
    };
    apply_permissions(&spec, &record).unwrap();

    let acl = getfacl(&f.host("opt/app/a.sh"));
    assert!(acl.contains("user:65534:r--"), "{acl}");
    assert!(acl.contains("group:65534:rw-"), "{acl}");
    let acl = getfacl(&f.host("opt/app/sub"));
    assert!(acl.contains("user:65534:r-x"), "{acl}");
    assert!(acl.contains("default:user:65534:rwx"), "{acl}");
    let acl = getfacl(&f.host("opt/app/b.txt"));
    assert!(!acl.contains("65534"), "{acl}");
}

#[test]
fn default_acl_on_a_file_is_an_error() {
    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut p = permission(f.host("opt/app"));
    p.acls = vec!["d:u:65534:rwx".into()];
    let spec = AppSpec {
        permissions: vec![p],
        ..AppSpec::default()
    };
    let message = apply_permissions(&spec, &record).unwrap_err().to_string();
    assert!(
        message.contains("default ACL entry \"d:u:65534:rwx\" applies only to directories"),
        "{message}"
    );
}

#[test]
fn missing_tools_are_clear_errors_before_any_change() {
    let f = Fixture::new();
    let record = installed_tree(&f);
    let empty = tempfile::tempdir().unwrap();

    let mut acl = permission(f.host("opt/app"));
    acl.mode = Some(0o777);
    acl.acls = vec!["u:65534:r".into()];
    let mut selinux = permission(f.host("opt/app"));
    selinux.mode = Some(0o777);
    selinux.context = Some(SelinuxContext {
        user: None,
        type_: "httpd_sys_content_t".into(),
        range: None,
    });
    for (p, expected) in [
        (acl, "setfacl is not installed (install the acl package)"),
        (
            selinux,
            "semanage is not installed (install the policycoreutils-python-utils package)",
        ),
    ] {
        let spec = AppSpec {
            permissions: vec![p],
            ..AppSpec::default()
        };
        let error =
            apply_permissions_searching(&spec, &record, empty.path().as_os_str()).unwrap_err();
        assert!(
            matches!(error, InstallError::MissingTool { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(mode_of(&f.host("opt/app/a.sh")), 0o600, "nothing changes");
    }
}

#[test]
fn selinux_context_without_semanage_is_a_clear_error() {
    // An empty search path stands for a host without semanage, whatever this one has.
    let empty = tempfile::tempdir().unwrap();
    let f = Fixture::new();
    let record = installed_tree(&f);
    let mut p = permission(f.host("opt/app"));
    p.context = Some(SelinuxContext {
        user: Some("system_u".into()),
        type_: "httpd_sys_content_t".into(),
        range: Some("s0".into()),
    });
    let spec = AppSpec {
        permissions: vec![p],
        ..AppSpec::default()
    };
    let message = apply_permissions_searching(&spec, &record, empty.path().as_os_str())
        .unwrap_err()
        .to_string();
    assert!(message.contains("semanage is not installed"), "{message}");
}

#[test]
fn simple_glob_escapes_everything_but_star() {
    for (pattern, expected) in [
        ("*.sh", "*.sh"),
        ("a**b", "a*b"),
        ("**", "*"),
        ("f?[x].txt", "f[?][[]x[]].txt"),
    ] {
        assert_eq!(simple_glob(pattern), expected, "{pattern}");
    }
}

#[test]
fn installed_files_serialize_with_snake_case_kinds() {
    let record = InstalledFiles::new(vec![InstalledEntry {
        path: "/opt/app".into(),
        kind: EntryKind::Directory,
    }]);
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(
        json,
        r#"{"schema_version":1,"entries":[{"path":"/opt/app","kind":"directory"}]}"#
    );
    // A record written before it carried a schema version reads as version 1.
    let old: InstalledFiles =
        serde_json::from_str(r#"{"entries":[{"path":"/opt/app","kind":"directory"}]}"#).unwrap();
    assert_eq!(old, record);
}

/// Regression: permissions that cannot apply were found only after Install had copied the
/// files, leaving a file meant to be 0600 on disk at 0644. Each case must install nothing.
#[test]
fn permissions_that_cannot_apply_install_nothing() {
    // (what is wrong, permissions for a fixture where opt/app/secret.txt is a file)
    type Rules = Box<dyn Fn(&Fixture) -> Vec<Permission>>;
    let cases: Vec<(&str, Rules)> = vec![
        (
            "pattern on a file object",
            Box::new(|f| {
                let mut p = permission(f.host("opt/app/secret.txt"));
                p.mode = Some(0o600);
                p.pattern = "*.txt".into();
                vec![p]
            }),
        ),
        (
            "except on a file object",
            Box::new(|f| {
                let mut p = permission(f.host("opt/app/secret.txt"));
                p.mode = Some(0o600);
                p.except = vec!["x".into()];
                vec![p]
            }),
        ),
        (
            "default ACL entry on a file",
            Box::new(|f| {
                let mut p = permission(f.host("opt/app"));
                p.mode = Some(0o600);
                p.acls = vec!["d:u:65534:rwx".into()];
                vec![p]
            }),
        ),
        (
            "a path matched by two entries",
            Box::new(|f| {
                let mut first = permission(f.host("opt/app"));
                first.mode = Some(0o600);
                let mut second = permission(f.host("opt/app/secret.txt"));
                second.mode = Some(0o600);
                vec![first, second]
            }),
        ),
        (
            "an unknown owner",
            Box::new(|f| {
                let mut p = permission(f.host("opt/app"));
                p.mode = Some(0o600);
                p.owner = Some("hoist-no-such-user".into());
                vec![p]
            }),
        ),
    ];
    for (why, permissions) in cases {
        let f = Fixture::new();
        let secret = f.bundle_file("app/secret.txt", "s3cret\n");
        fs::set_permissions(secret, Permissions::from_mode(0o644)).unwrap();
        let mut spec = spec(vec![("app", f.host("opt/app"))]);
        spec.permissions = permissions(&f);
        let mut record = InstalledFiles::default();
        let error = install_files(&spec, &f.bundle, FileExistsBehavior::Disallow, &mut record)
            .expect_err(why);
        assert!(
            matches!(error, InstallError::Permission { .. }),
            "{why}: {error:?}"
        );
        assert!(tree(&f.host).is_empty(), "{why}: {:?}", tree(&f.host));
        assert!(record.entries.is_empty(), "{why}: {record:?}");
    }
}

/// A symlink pointing out of the bundle, named as a `files` source or met inside one, is
/// installed as a link: what it points at is never copied, and permissions change only the
/// link's own owner (CodeDeploy's v2 agent copies the target directory's contents).
#[test]
fn a_symlink_out_of_the_bundle_is_installed_as_a_link_and_never_followed() {
    let f = Fixture::new();
    let outside = f._temp.path().join("outside");
    write(&outside.join("secret.log"), "outside\n");
    fs::set_permissions(&outside, Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(outside.join("secret.log"), Permissions::from_mode(0o644)).unwrap();
    f.bundle_file("app/run.sh", "#!/bin/sh\n");
    std::os::unix::fs::symlink(&outside, f.bundle.join("app/logs")).unwrap();
    std::os::unix::fs::symlink(&outside, f.bundle.join("logs")).unwrap();

    let mut spec = spec(vec![("app", f.host("opt/app")), ("logs", f.host("var"))]);
    let mut everything = permission(f.host("opt/app"));
    everything.mode = Some(0o700);
    let mut link_object = permission(f.host("var/logs"));
    link_object.mode = Some(0o700);
    spec.permissions = vec![everything, link_object];
    let mut record = InstalledFiles::default();
    install_files(&spec, &f.bundle, FileExistsBehavior::Disallow, &mut record).unwrap();
    apply_permissions(&spec, &record).unwrap();

    for link in ["opt/app/logs", "var/logs"] {
        assert_eq!(fs::read_link(f.host(link)).unwrap(), outside, "{link}");
    }
    assert_eq!(
        tree(&f.host("var")),
        ["logs"],
        "nothing copied from the target"
    );
    assert_eq!(mode_of(&f.host("opt/app/run.sh")), 0o700);
    assert_eq!(mode_of(&outside), 0o755, "no chmod through the link");
    assert_eq!(mode_of(&outside.join("secret.log")), 0o644);
}
