//! Property: any sequence of deployments with any `file_exists_behavior` over a random host
//! tree leaves exactly the files and directories a simple model predicts.
//!
//! Each case starts from a host tree of files Hoist did not install, then runs steps: a
//! deployment (a random bundle installed at one destination, the way the engine's Install
//! event does it: remove what the previous deployment recorded, install, keep the new record
//! whatever the outcome) or someone else writing a file. After every step the real tree, the
//! contents and the record are compared with the model. File and directory names come from
//! disjoint sets, so a file never stands where a directory must go: those clashes are table
//! tests above, not part of the model. Permissions are not exercised here.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// Directories below the destination ("" is the destination itself).
const DIRS: [&str; 4] = ["", "a", "a/b", "c"];
/// File names; never a directory's name.
const NAMES: [&str; 3] = ["f", "g", "h"];

/// A file path relative to the destination, from its index in DIRS × NAMES.
fn file_path(index: usize) -> String {
    let dir = DIRS[index / NAMES.len()];
    let name = NAMES[index % NAMES.len()];
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

const PATHS: usize = DIRS.len() * NAMES.len();

/// Every proper ancestor directory of `path` inside the destination, the destination ("")
/// included, outermost first.
fn ancestors(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let parts: Vec<&str> = path.split('/').collect();
    for i in 1..parts.len() {
        out.push(parts[..i].join("/"));
    }
    out
}

#[derive(Debug, Clone)]
enum Step {
    Deploy {
        files: BTreeSet<usize>,
        behavior: FileExistsBehavior,
    },
    /// Someone else writes a file (creating its directories), possibly over an installed one.
    Foreign { file: usize },
}

fn behavior() -> impl Strategy<Value = FileExistsBehavior> {
    prop_oneof![
        Just(FileExistsBehavior::Disallow),
        Just(FileExistsBehavior::Overwrite),
        Just(FileExistsBehavior::Retain),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (proptest::collection::btree_set(0..PATHS, 1..6), behavior())
            .prop_map(|(files, behavior)| Step::Deploy { files, behavior }),
        1 => (0..PATHS).prop_map(|file| Step::Foreign { file }),
    ]
}

/// What should be on disk below the destination, and what the last deployment recorded.
#[derive(Debug, Default)]
struct Model {
    /// Files and their contents.
    files: BTreeMap<String, String>,
    /// Directories that exist ("" is the destination).
    dirs: BTreeSet<String>,
    recorded_files: BTreeSet<String>,
    recorded_dirs: BTreeSet<String>,
}

impl Model {
    fn write_foreign(&mut self, path: &str, contents: String) {
        self.dirs.extend(ancestors(path));
        self.files.insert(path.to_owned(), contents);
    }

    fn is_empty_dir(&self, dir: &str) -> bool {
        let below = |p: &String| {
            if dir.is_empty() {
                !p.is_empty()
            } else {
                p.starts_with(&format!("{dir}/"))
            }
        };
        !self.files.keys().any(below) && !self.dirs.iter().any(below)
    }

    fn remove_previous(&mut self) {
        for file in std::mem::take(&mut self.recorded_files) {
            self.files.remove(&file);
        }
        let mut dirs: Vec<String> = std::mem::take(&mut self.recorded_dirs)
            .into_iter()
            .collect();
        // Deepest first ("" has depth 0, "a/b" depth 2).
        dirs.sort_by_key(|d| Reverse(Path::new(d).components().count()));
        for dir in dirs {
            if self.is_empty_dir(&dir) {
                self.dirs.remove(&dir);
            }
        }
    }

    /// Returns whether the installation should succeed.
    fn install(&mut self, bundle: &BTreeMap<String, String>, behavior: FileExistsBehavior) -> bool {
        if behavior == FileExistsBehavior::Disallow
            && bundle.keys().any(|path| self.files.contains_key(path))
        {
            return false;
        }
        for (path, contents) in bundle {
            for dir in ancestors(path) {
                if self.dirs.insert(dir.clone()) {
                    self.recorded_dirs.insert(dir);
                }
            }
            if self.files.contains_key(path) && behavior == FileExistsBehavior::Retain {
                continue;
            }
            self.files.insert(path.clone(), contents.clone());
            self.recorded_files.insert(path.clone());
        }
        true
    }
}

/// The files (with contents) and directories below `dest`, relative to it; `dest` itself is
/// the directory "" when it exists.
fn disk(dest: &Path) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    if !dest.exists() {
        return (files, dirs);
    }
    dirs.insert(String::new());
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(dest).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.insert(relative);
                stack.push(path);
            } else {
                files.insert(relative, read(&path));
            }
        }
    }
    (files, dirs)
}

fn relative_record(dest: &Path, record: &InstalledFiles) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for entry in &record.entries {
        let relative = entry.path.strip_prefix(dest).unwrap().display().to_string();
        let fresh = match entry.kind {
            EntryKind::Directory => dirs.insert(relative),
            EntryKind::File | EntryKind::Symlink => files.insert(relative),
        };
        assert!(fresh, "{} recorded twice", entry.path.display());
    }
    (files, dirs)
}

fn run(host: BTreeSet<usize>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let temp = tempfile::tempdir().unwrap();
    let dest = temp.path().join("host/app");
    fs::create_dir(temp.path().join("host")).unwrap();
    let mut model = Model::default();
    for index in host {
        let path = file_path(index);
        write(&dest.join(&path), &format!("host {path}"));
        model.write_foreign(&path, format!("host {path}"));
    }
    let mut previous = InstalledFiles::default();
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Foreign { file } => {
                let path = file_path(file);
                let contents = format!("foreign {n} {path}");
                write(&dest.join(&path), &contents);
                model.write_foreign(&path, contents);
            }
            Step::Deploy { files, behavior } => {
                let bundle_dir = temp.path().join(format!("bundle-{n}"));
                let mut bundle = BTreeMap::new();
                for index in files {
                    let path = file_path(index);
                    let contents = format!("revision {n} {path}");
                    write(&bundle_dir.join(&path), &contents);
                    bundle.insert(path, contents);
                }
                let spec = spec(vec![("/", dest.clone())]);

                remove_previous(&previous).unwrap();
                model.remove_previous();
                let mut record = InstalledFiles::default();
                let result = install_files(&spec, &bundle_dir, behavior, &mut record);
                let expected_ok = model.install(&bundle, behavior);
                match (&result, expected_ok) {
                    (Ok(_), true) | (Err(InstallError::Exists { .. }), false) => {}
                    (other, _) => prop_assert!(
                        false,
                        "step {n} ({behavior:?}): got {other:?}, model expected success: {expected_ok}"
                    ),
                }
                let (recorded_files, recorded_dirs) = relative_record(&dest, &record);
                prop_assert_eq!(
                    &recorded_files,
                    &model.recorded_files,
                    "files recorded at step {}",
                    n
                );
                prop_assert_eq!(
                    &recorded_dirs,
                    &model.recorded_dirs,
                    "directories recorded at step {}",
                    n
                );
                previous = record;
            }
        }
        let (files, dirs) = disk(&dest);
        prop_assert_eq!(&files, &model.files, "files after step {}", n);
        prop_assert_eq!(&dirs, &model.dirs, "directories after step {}", n);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn installs_over_a_random_tree_leave_exactly_the_expected_files(
        host in proptest::collection::btree_set(0..PATHS, 0..5),
        steps in proptest::collection::vec(step(), 1..6),
    ) {
        run(host, steps)?;
    }
}
