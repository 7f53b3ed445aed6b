//! The appspec's `permissions` applied to what this deployment installed: which installed
//! paths each entry matches, the users, groups and tools it needs (all resolved before the
//! first change), then chmod, chown, `setfacl` and SELinux file contexts.
//!
//! `permissions` follow CodeDeploy's agent exactly where bundles could notice: a directory
//! `object` applies to what was installed strictly below it (never to the object itself); a
//! `pattern` other than `**`, and every `except`, match only direct children of the object and
//! know only the `*` wildcard; a file `object` applies to that file and then allows only the
//! default pattern and no `except`; a path matched by two entries is an error. Where CodeDeploy
//! has a trap, this module does the sensible thing instead: symlinks get only their own
//! ownership changed (never mode, ACLs or context through the link), and a mode with setuid or
//! setgid bits is applied again after chown, which clears those bits.
//!
//! It changes only paths in the record it is given (what this deployment installed), never
//! anything else on the host, and it removes no SELinux file-context rule it added.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoist_appspec::{AppSpec, ObjectType, Permission, SelinuxContext};
use nix::unistd::{Gid, Group, Uid, User};

use super::{io_err, normalize, EntryKind, InstallError, InstalledFiles};

/// Where `setfacl`, `semanage` and `restorecon` are looked for.
pub(super) fn search_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    })
}

/// One installed path a `permissions` entry applies to.
struct PermissionTarget<'a> {
    path: &'a Path,
    kind: EntryKind,
    /// Index into `spec.permissions`.
    entry: usize,
}

/// Owner and group of a `permissions` entry, resolved by name before anything is changed.
#[derive(Clone, Copy, Default)]
struct Ids {
    uid: Option<Uid>,
    gid: Option<Gid>,
}

/// Tools found on the search path; `None` when no target needs them.
struct Tools {
    setfacl: Option<PathBuf>,
    semanage: Option<PathBuf>,
    restorecon: Option<PathBuf>,
}

/// [`apply_permissions`] with an explicit executable search path for `setfacl`, `semanage`
/// and `restorecon`. Everything is resolved and checked (matches, users, groups, tools)
/// before the first change.
pub(super) fn apply_permissions_searching(
    spec: &AppSpec,
    installed: &InstalledFiles,
    search_path: &OsStr,
) -> Result<(), InstallError> {
    let checked = check_permissions(spec, installed, search_path)?;
    for target in &checked.targets {
        apply_one(
            target.path,
            &spec.permissions[target.entry],
            checked.ids[target.entry],
            &checked.tools,
        )?;
    }
    Ok(())
}

/// Every `permissions` entry resolved against `installed`, with its users, groups and tools.
pub(super) struct CheckedPermissions<'a> {
    targets: Vec<PermissionTarget<'a>>,
    ids: Vec<Ids>,
    tools: Tools,
}

/// Resolves every `permissions` entry against `installed` (which paths each entry matches,
/// files against directories), and the users, groups and tools they need, changing nothing.
pub(super) fn check_permissions<'a>(
    spec: &AppSpec,
    installed: &'a InstalledFiles,
    search_path: &OsStr,
) -> Result<CheckedPermissions<'a>, InstallError> {
    let targets = plan_permissions(spec, installed)?;

    let mut ids = vec![Ids::default(); spec.permissions.len()];
    let mut resolved = vec![false; spec.permissions.len()];
    for target in &targets {
        if !resolved[target.entry] {
            ids[target.entry] = resolve_ids(&spec.permissions[target.entry])?;
            resolved[target.entry] = true;
        }
    }

    let mut tools = Tools {
        setfacl: None,
        semanage: None,
        restorecon: None,
    };
    for target in targets.iter().filter(|t| t.kind != EntryKind::Symlink) {
        let permission = &spec.permissions[target.entry];
        if !permission.acls.is_empty() && tools.setfacl.is_none() {
            tools.setfacl = Some(find_tool(search_path, "setfacl", "acl", target.path)?);
        }
        if permission.context.is_some() && tools.semanage.is_none() {
            tools.semanage = Some(find_tool(
                search_path,
                "semanage",
                "policycoreutils-python-utils",
                target.path,
            )?);
            tools.restorecon = Some(find_tool(
                search_path,
                "restorecon",
                "policycoreutils",
                target.path,
            )?);
        }
    }

    Ok(CheckedPermissions {
        targets,
        ids,
        tools,
    })
}

/// Decides which installed paths each `permissions` entry applies to, in entry order, with
/// CodeDeploy's rules (see the module documentation).
fn plan_permissions<'a>(
    spec: &AppSpec,
    installed: &'a InstalledFiles,
) -> Result<Vec<PermissionTarget<'a>>, InstallError> {
    let installed_files: HashMap<&Path, EntryKind> = installed
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Directory)
        .map(|e| (e.path.as_path(), e.kind))
        .collect();
    let created_dirs: HashSet<&Path> = installed
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Directory)
        .map(|e| e.path.as_path())
        .collect();

    let mut targets = Vec::new();
    let mut claimed: HashMap<&Path, usize> = HashMap::new();
    for (index, permission) in spec.permissions.iter().enumerate() {
        let object = normalize(&permission.object);
        let wants = |t: ObjectType| permission.types.is_empty() || permission.types.contains(&t);
        let mut matches: Vec<(&'a Path, EntryKind)> = Vec::new();

        if let Some((&path, &kind)) = installed_files.get_key_value(object.as_path()) {
            if wants(ObjectType::File) {
                if permission.pattern != "**" {
                    return Err(InstallError::Permission {
                        path: object,
                        reason: format!(
                            "permissions[{index}].pattern {:?} cannot apply to a file object (only \"**\" can)",
                            permission.pattern
                        ),
                    });
                }
                if !permission.except.is_empty() {
                    return Err(InstallError::Permission {
                        path: object,
                        reason: format!(
                            "permissions[{index}].except cannot apply to a file object"
                        ),
                    });
                }
                matches.push((path, kind));
            }
        } else if created_dirs.contains(object.as_path()) || object.is_dir() {
            let matcher = NameMatcher::new(index, permission)?;
            for entry in &installed.entries {
                let wanted = match entry.kind {
                    EntryKind::File | EntryKind::Symlink => wants(ObjectType::File),
                    EntryKind::Directory => false,
                };
                if wanted && matcher.matches(&object, &entry.path) {
                    matches.push((entry.path.as_path(), entry.kind));
                }
            }
            if wants(ObjectType::Directory) {
                for entry in &installed.entries {
                    if entry.kind == EntryKind::Directory && matcher.matches(&object, &entry.path) {
                        matches.push((entry.path.as_path(), entry.kind));
                    }
                }
            }
        }

        for (path, kind) in matches {
            if kind != EntryKind::Directory {
                if let Some(acl) = permission.acls.iter().find(|a| is_default_acl(a)) {
                    return Err(InstallError::Permission {
                        path: path.to_path_buf(),
                        reason: format!(
                            "permissions[{index}] default ACL entry {acl:?} applies only to directories"
                        ),
                    });
                }
            }
            if let Some(first) = claimed.insert(path, index) {
                return Err(InstallError::Permission {
                    path: path.to_path_buf(),
                    reason: format!(
                        "matched by both permissions[{first}] and permissions[{index}]"
                    ),
                });
            }
            targets.push(PermissionTarget {
                path,
                kind,
                entry: index,
            });
        }
    }
    Ok(targets)
}

fn is_default_acl(entry: &str) -> bool {
    let entry = entry.trim_start();
    entry.starts_with("d:") || entry.starts_with("default:")
}

/// CodeDeploy's name matching: `**` as the pattern matches everything below the object;
/// any other pattern, and every `except`, matches one path component (a direct child) with
/// `*` as the only wildcard.
struct NameMatcher {
    everything: bool,
    pattern: glob::Pattern,
    except: Vec<glob::Pattern>,
}

impl NameMatcher {
    fn new(index: usize, permission: &Permission) -> Result<Self, InstallError> {
        let compile = |glob: &str, key: &str| {
            glob::Pattern::new(&simple_glob(glob)).map_err(|e| InstallError::Permission {
                path: permission.object.clone(),
                reason: format!("permissions[{index}].{key} {glob:?}: {e}"),
            })
        };
        Ok(NameMatcher {
            everything: permission.pattern == "**",
            pattern: compile(&permission.pattern, "pattern")?,
            except: permission
                .except
                .iter()
                .map(|e| compile(e, "except"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn matches(&self, object: &Path, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(object) else {
            return false;
        };
        if relative.as_os_str().is_empty() {
            return false;
        }
        let name = relative.to_string_lossy();
        let included = self.everything || matches_one_component(&self.pattern, &name);
        included && !self.except.iter().any(|e| matches_one_component(e, &name))
    }
}

fn matches_one_component(pattern: &glob::Pattern, name: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    !name.contains('/') && pattern.matches_with(name, options)
}

/// Turns a CodeDeploy pattern (only `*` is special) into a glob pattern: other glob
/// metacharacters are escaped and runs of `*` collapse to one.
pub(super) fn simple_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut previous_star = false;
    for c in pattern.chars() {
        match c {
            '*' if previous_star => continue,
            '*' => out.push('*'),
            '?' | '[' | ']' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            _ => out.push(c),
        }
        previous_star = c == '*';
    }
    out
}

fn resolve_ids(permission: &Permission) -> Result<Ids, InstallError> {
    let uid = match &permission.owner {
        None => None,
        Some(name) => match User::from_name(name) {
            Ok(Some(user)) => Some(user.uid),
            Ok(None) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("unknown user {name:?}"),
                })
            }
            Err(e) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("looking up user {name:?}: {e}"),
                })
            }
        },
    };
    let gid = match &permission.group {
        None => None,
        Some(name) => match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid),
            Ok(None) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("unknown group {name:?}"),
                })
            }
            Err(e) => {
                return Err(InstallError::Permission {
                    path: permission.object.clone(),
                    reason: format!("looking up group {name:?}: {e}"),
                })
            }
        },
    };
    Ok(Ids { uid, gid })
}

pub(super) fn find_tool(
    search_path: &OsStr,
    tool: &'static str,
    package: &'static str,
    path: &Path,
) -> Result<PathBuf, InstallError> {
    std::env::split_paths(search_path)
        // `PATH` comes from the agent's environment, not the appspec: a relative entry
        // would find a tool relative to the working directory, so it is skipped.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| InstallError::MissingTool {
            path: path.to_path_buf(),
            tool,
            package,
        })
}

/// Applies one entry to one path: mode, owner and group, ACLs, SELinux context. A symlink
/// gets only its own owner and group: the rest would act on whatever the link points to.
fn apply_one(
    path: &Path,
    permission: &Permission,
    ids: Ids,
    tools: &Tools,
) -> Result<(), InstallError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
    let is_link = meta.file_type().is_symlink();
    let chmod = |mode: u32| {
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", path))
    };
    if let (Some(mode), false) = (permission.mode, is_link) {
        chmod(mode)?;
    }
    if ids.uid.is_some() || ids.gid.is_some() {
        std::os::unix::fs::lchown(path, ids.uid.map(Uid::as_raw), ids.gid.map(Gid::as_raw))
            .map_err(io_err("changing owner of", path))?;
        // chown clears setuid and setgid; put them back as the appspec asked.
        if let (Some(mode), false) = (permission.mode, is_link) {
            if mode & 0o6000 != 0 {
                chmod(mode)?;
            }
        }
    }
    if is_link {
        return Ok(());
    }
    if let (false, Some(setfacl)) = (permission.acls.is_empty(), &tools.setfacl) {
        let entries = permission.acls.join(",");
        run(
            path,
            Command::new(setfacl).arg("-m").arg(&entries).arg(path),
        )?;
    }
    if let (Some(context), Some(semanage), Some(restorecon)) =
        (&permission.context, &tools.semanage, &tools.restorecon)
    {
        set_selinux_context(path, context, semanage, restorecon)?;
    }
    Ok(())
}

/// Adds a file-context rule for the path with `semanage fcontext` (changing it with `-m`
/// when one is already defined, e.g. by a previous deployment) and relabels the path with
/// `restorecon -F`, so the context survives a relabel of the filesystem. `-F` is needed for
/// the user and range to be applied, not only the type.
fn set_selinux_context(
    path: &Path,
    context: &SelinuxContext,
    semanage: &Path,
    restorecon: &Path,
) -> Result<(), InstallError> {
    let real = fs::canonicalize(path).map_err(io_err("resolving", path))?;
    let spec = regex_escape(&real.to_string_lossy());
    let fcontext = |action: &str| {
        let mut command = Command::new(semanage);
        command
            .arg("fcontext")
            .arg(action)
            .arg("-t")
            .arg(&context.type_);
        if let Some(user) = &context.user {
            command.arg("-s").arg(user);
        }
        if let Some(range) = &context.range {
            command.arg("-r").arg(range);
        }
        command.arg(&spec);
        command
    };
    match run(path, &mut fcontext("-a")) {
        Ok(()) => {}
        Err(InstallError::Permission { reason, .. }) if reason.contains("already defined") => {
            run(path, &mut fcontext("-m"))?;
        }
        Err(e) => return Err(e),
    }
    run(path, Command::new(restorecon).arg("-F").arg(&real))
}

/// Escapes a literal path for a file-context specification, which is a regular expression.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.^$*+?()[]{}|".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs a permission tool; a failure names the command line and carries its stderr.
fn run(path: &Path, command: &mut Command) -> Result<(), InstallError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %line, "running");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Permission {
            path: path.to_path_buf(),
            reason: format!("running {line}: {e}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(InstallError::Permission {
        path: path.to_path_buf(),
        reason: format!("{line} failed ({}): {}", output.status, stderr.trim()),
    })
}
