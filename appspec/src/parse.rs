//! YAML text in; a validated [`AppSpec`] or every problem at once out.
//!
//! The text is read into a `serde_yaml::Value` and walked by hand rather than deserialized
//! into structs, so that every problem is reported in one pass with its key path
//! (`hooks.AfterInstall[0].timeout`) instead of stopping at the first. The rules follow
//! CodeDeploy's EC2/on-premises agent: what it accepts is accepted, what it rejects is
//! rejected, and what it silently ignores (unknown keys, unknown lifecycle events) is a
//! warning. This module does not look at the bundle or the host: whether a hook script
//! exists or a user is known is checked when the deployment runs.

use serde_yaml::Value;

use crate::permissions::permissions;
use crate::walk::{index_path, key_path, key_text, list, mapping, shown, Fields, Report};
use crate::{
    AppSpec, FileExistsBehavior, FileMapping, Hook, Invalid, LifecycleEvent, Parsed,
    DEFAULT_HOOK_TIMEOUT_SECS,
};

/// The operating system this agent deploys to.
const HOST_OS: &str = "linux";

const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "os",
    "files",
    "file_exists_behavior",
    "permissions",
    "hooks",
    "hoist",
];
const FILE_KEYS: &[&str] = &["source", "destination"];
const HOOK_KEYS: &[&str] = &["location", "timeout", "runas", "sudo"];

/// The message for a relative `destination` or `object`.
pub(crate) fn relative_path_message(path: &str) -> String {
    format!(
        "must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got {path:?})"
    )
}

/// Parses and validates an appspec's text.
///
/// On success the warnings (unknown keys and lifecycle events, which CodeDeploy ignores)
/// come with the spec; on failure every error found is returned, with the warnings.
pub fn parse(text: &str) -> Result<Parsed, Invalid> {
    let mut report = Report::default();
    let spec = match load(text) {
        Ok(document) => appspec(&mut report, &document),
        Err(error) => {
            report.errors.push(error);
            AppSpec::default()
        }
    };
    if report.errors.is_empty() {
        Ok(Parsed {
            spec,
            warnings: report.warnings,
        })
    } else {
        Err(Invalid {
            errors: report.errors,
            warnings: report.warnings,
        })
    }
}

/// Reads the YAML document, resolving `<<` merge keys as CodeDeploy's YAML reader does.
fn load(text: &str) -> Result<Value, crate::Diagnostic> {
    let whole = |message: String| crate::Diagnostic {
        path: String::new(),
        message,
    };
    // Checked before YAML sees it: a tab-indented blank line is a YAML syntax error, but a
    // file with nothing in it is better told as empty.
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    });
    if blank {
        return Err(whole("appspec is empty".to_owned()));
    }
    let mut document: Value = serde_yaml::from_str(text).map_err(|e| whole(syntax_error(&e)))?;
    document
        .apply_merge()
        .map_err(|e| whole(format!("invalid yaml merge key (<<): {e}")))?;
    if document.is_null() {
        return Err(whole("appspec is empty".to_owned()));
    }
    Ok(document)
}

/// `invalid yaml at line 3, column 2: did not find expected key, while parsing a block mapping`.
fn syntax_error(error: &serde_yaml::Error) -> String {
    let message = error.to_string();
    match error.location() {
        Some(at) => {
            // The library appends the same position to its own message; say it once, up front.
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            let message = message.replacen(&suffix, "", 1);
            format!(
                "invalid yaml at line {}, column {}: {message}",
                at.line(),
                at.column()
            )
        }
        None => format!("invalid yaml: {message}"),
    }
}

fn appspec(report: &mut Report, document: &Value) -> AppSpec {
    let mut spec = AppSpec::default();
    let Some(top) = mapping(
        report,
        "",
        "a mapping of appspec keys (version, os, files, hooks, ...)",
        document,
    ) else {
        return spec;
    };
    let fields = Fields::new(report, top, "", TOP_LEVEL_KEYS);
    spec.version = version(report, fields.get("version"));
    spec.os = os(report, &fields);
    if let Some(value) = fields.get("files") {
        spec.files = files(report, value);
    }
    spec.file_exists_behavior = fields
        .optional_string(report, "file_exists_behavior")
        .and_then(|s| {
            s.parse::<FileExistsBehavior>()
                .map_err(|message| report.error("file_exists_behavior", message))
                .ok()
        });
    if let Some(value) = fields.get("permissions") {
        spec.permissions = permissions(report, value);
    }
    if let Some(value) = fields.get("hooks") {
        spec.hooks = hooks(report, value);
    }
    if let Some(value) = fields.get("hoist") {
        spec.releases = crate::releases::hoist_section(report, value, &spec.files);
    }
    spec
}

/// `version` must be 0.0. CodeDeploy compares the YAML value with the float 0.0, so `0.0`
/// and `0` pass; the string `"0.0"` is accepted too, as quoting a version is common.
fn version(report: &mut Report, value: Option<&Value>) -> String {
    let Some(value) = value else {
        report.error("version", "required");
        return String::new();
    };
    let ok = match value {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s == "0.0",
        _ => false,
    };
    if !ok {
        report.error("version", format!("must be 0.0, got {}", shown(value)));
    }
    "0.0".to_owned()
}

fn os(report: &mut Report, fields: &Fields<'_>) -> String {
    let Some(os) = fields.get("os") else {
        report.error("os", "required");
        return String::new();
    };
    match os {
        Value::String(s) if s == HOST_OS => {}
        Value::String(s) if s == "windows" => report.error(
            "os",
            "this host runs linux; an appspec for os windows cannot be deployed here",
        ),
        other => report.error("os", format!("must be linux, got {}", shown(other))),
    }
    HOST_OS.to_owned()
}

fn files(report: &mut Report, value: &Value) -> Vec<FileMapping> {
    let Some(entries) = list(report, "files", value) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = index_path("files", i);
        let Some(entry) = mapping(
            report,
            &path,
            "a files entry (a mapping with source and destination)",
            entry,
        ) else {
            continue;
        };
        let fields = Fields::new(report, entry, &path, FILE_KEYS);
        let source = fields.required_string(report, "source");
        let destination = fields.required_string(report, "destination");
        if let Some(destination) = destination {
            if !destination.starts_with('/') {
                report.error(
                    &fields.path("destination"),
                    relative_path_message(destination),
                );
            }
        }
        if let (Some(source), Some(destination)) = (source, destination) {
            files.push(FileMapping {
                source: source.to_owned(),
                destination: destination.into(),
            });
        }
    }
    files
}

fn hooks(report: &mut Report, value: &Value) -> Vec<(LifecycleEvent, Vec<Hook>)> {
    let Some(events) = mapping(
        report,
        "hooks",
        "a mapping of lifecycle events to scripts",
        value,
    ) else {
        return Vec::new();
    };
    let mut hooks: Vec<(LifecycleEvent, Vec<Hook>)> = Vec::new();
    for (name, scripts) in events {
        let name = key_text(name);
        let path = key_path("hooks", &name);
        let event = name.parse::<LifecycleEvent>().ok();
        match event {
            // CodeDeploy parses scripts under these events and never runs them.
            Some(event) if event.is_builtin() => report.warn(
                &path,
                format!("{event} is run by the agent itself: these scripts will not run"),
            ),
            Some(_) => {}
            None => report.warn(&path, unknown_event(&name)),
        }
        // Scripts under an unknown event are still checked: CodeDeploy rejects a bad one
        // wherever it is, even though it never runs it.
        let scripts = event_scripts(report, &path, scripts);
        if let Some(event) = event.filter(|e| !e.is_builtin()) {
            if !scripts.is_empty() {
                hooks.push((event, scripts));
            }
        }
    }
    hooks.sort_by_key(|(event, _)| *event);
    hooks
}

fn unknown_event(name: &str) -> String {
    let near = LifecycleEvent::ALL
        .into_iter()
        .find(|e| !e.is_builtin() && e.as_str().eq_ignore_ascii_case(name));
    match near {
        Some(event) => format!("unknown lifecycle event, ignored (did you mean {event}?)"),
        None => "unknown lifecycle event, ignored".to_owned(),
    }
}

fn event_scripts(report: &mut Report, path: &str, value: &Value) -> Vec<Hook> {
    let entries = match value {
        Value::Sequence(entries) => entries,
        // `AfterInstall:` with nothing after it: CodeDeploy reads it as no scripts.
        Value::Null => return Vec::new(),
        other => {
            report.wrong_type(path, "a list of scripts", other);
            return Vec::new();
        }
    };
    let mut scripts = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = index_path(path, i);
        let Some(entry) = mapping(
            report,
            &path,
            "a script (a mapping with location, timeout, runas)",
            entry,
        ) else {
            continue;
        };
        let fields = Fields::new(report, entry, &path, HOOK_KEYS);
        let location = fields.required_string(report, "location").map(str::trim);
        if location == Some("") {
            report.error(&fields.path("location"), "must not be empty");
        }
        let timeout_secs = match fields.get("timeout") {
            None => DEFAULT_HOOK_TIMEOUT_SECS,
            Some(value) => timeout(value).unwrap_or_else(|| {
                report.error(
                    &fields.path("timeout"),
                    format!(
                        "must be a positive whole number of seconds, got {}",
                        shown(value)
                    ),
                );
                DEFAULT_HOOK_TIMEOUT_SECS
            }),
        };
        let runas = fields.optional_name(report, "runas");
        if fields.get("sudo").is_some() {
            report.warn(
                &fields.path("sudo"),
                "ignored: CodeDeploy's agent runs the script through sudo (for an agent that is \
                 not root); hoist runs it as root, or switches to runas directly",
            );
        }
        if let Some(location) = location {
            scripts.push(Hook {
                location: location.to_owned(),
                timeout_secs,
                runas,
            });
        }
    }
    scripts
}

/// A hook timeout in seconds: a positive whole number, or a string of digits (CodeDeploy
/// converts strings to integers, so `"300"` works there).
///
/// Stricter than CodeDeploy where it is lenient by accident: its conversion truncates
/// `1.5` to 1 and reads `"30s"` as 30; both are rejected here, since a timeout that is
/// not what was written is worse than an error.
fn timeout(value: &Value) -> Option<u64> {
    let secs = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()?
        }
        _ => return None,
    };
    (secs > 0).then_some(secs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A test that cannot write its rendering should fail.
mod tests {
    use std::fmt::Write as _;

    use super::parse;
    use crate::{AppSpec, ObjectType, Parsed};

    const HEAD: &str = "version: 0.0\nos: linux\n";

    /// Parses `yaml` and compares a compact rendering of the outcome with `expected`.
    ///
    /// Success renders one line per file, permission and hook (defaults left out), then the
    /// warnings; failure renders `error: path: message` lines, then the warnings.
    #[track_caller]
    fn check(yaml: &str, expected: &str) {
        let got = match parse(yaml) {
            Ok(Parsed { spec, warnings }) => {
                assert_eq!((spec.version.as_str(), spec.os.as_str()), ("0.0", "linux"));
                let mut out = render(&spec);
                for w in warnings {
                    writeln!(out, "warning: {w}").unwrap();
                }
                out
            }
            Err(invalid) => {
                let mut out = String::new();
                for e in invalid.errors {
                    writeln!(out, "error: {e}").unwrap();
                }
                for w in invalid.warnings {
                    writeln!(out, "warning: {w}").unwrap();
                }
                out
            }
        };
        assert_eq!(
            got.trim(),
            expected.trim(),
            "\n--- appspec ---\n{yaml}\n--- got ---\n{got}"
        );
    }

    /// [`check`] on `yaml` after a valid `version` and `os`.
    #[track_caller]
    fn check_body(yaml: &str, expected: &str) {
        check(&format!("{HEAD}{yaml}"), expected);
    }

    fn render(spec: &AppSpec) -> String {
        let mut out = String::new();
        for f in &spec.files {
            writeln!(out, "file {:?} -> {}", f.source, f.destination.display()).unwrap();
        }
        if let Some(b) = spec.file_exists_behavior {
            writeln!(out, "file_exists_behavior {}", b.as_str()).unwrap();
        }
        for p in &spec.permissions {
            write!(out, "permission {}", p.object.display()).unwrap();
            if p.pattern != "**" {
                write!(out, " pattern {:?}", p.pattern).unwrap();
            }
            if !p.except.is_empty() {
                write!(out, " except {:?}", p.except).unwrap();
            }
            if p.types != [ObjectType::File, ObjectType::Directory] {
                write!(out, " types {:?}", p.types).unwrap();
            }
            if let Some(owner) = &p.owner {
                write!(out, " owner {owner}").unwrap();
            }
            if let Some(group) = &p.group {
                write!(out, " group {group}").unwrap();
            }
            if let Some(mode) = p.mode {
                write!(out, " mode {mode:04o}").unwrap();
            }
            if !p.acls.is_empty() {
                write!(out, " acls {:?}", p.acls).unwrap();
            }
            if let Some(c) = &p.context {
                write!(out, " context type={}", c.type_).unwrap();
                if let Some(user) = &c.user {
                    write!(out, " user={user}").unwrap();
                }
                if let Some(range) = &c.range {
                    write!(out, " range={range}").unwrap();
                }
            }
            writeln!(out).unwrap();
        }
        for (event, scripts) in &spec.hooks {
            for h in scripts {
                write!(out, "hook {event} {}", h.location).unwrap();
                if h.timeout_secs != crate::DEFAULT_HOOK_TIMEOUT_SECS {
                    write!(out, " timeout {}", h.timeout_secs).unwrap();
                }
                if let Some(runas) = &h.runas {
                    write!(out, " runas {runas}").unwrap();
                }
                writeln!(out).unwrap();
            }
        }
        if let Some(r) = &spec.releases {
            writeln!(out, "releases {} keep {}", r.current.display(), r.keep).unwrap();
        }
        out
    }

    #[test]
    fn hoist_releases_section() {
        let files = "files:\n  - source: /\n    destination: /srv/shop/current\n";
        let with = |section: &str| format!("{files}hoist:\n{section}");
        check_body(
            &with("  releases:\n    current: /srv/shop/current/\n    keep: 3\n"),
            r#"
file "/" -> /srv/shop/current
releases /srv/shop/current keep 3
"#,
        );
        check_body(
            &with("  releases:\n    current: /srv/shop/./current\n"),
            r#"
file "/" -> /srv/shop/current
releases /srv/shop/current keep 5
"#,
        );
        // An empty section is no section.
        check_body(&with("  releases:\n"), r#"file "/" -> /srv/shop/current"#);
        check_body(
            &with(
                "  releases:\n    current: srv/current\n    keep: 1\n    kept: 2\n  signed: true\n",
            ),
            r#"
error: hoist.signed: unknown key (the keys of hoist are releases)
error: hoist.releases.kept: unknown key (the keys of hoist.releases are current, keep)
error: hoist.releases.current: must be an absolute path, got "srv/current"
error: hoist.releases.keep: must be a whole number from 2 to 50 (the current and the previous release are always kept), got 1
"#,
        );
        check_body(
            &with("  releases:\n    current: /srv/other\n    keep: many\n"),
            r#"
error: hoist.releases.current: "/srv/other" must be the destination of one of this appspec's files entries (the files installed into each release)
error: hoist.releases.keep: must be a whole number from 2 to 50 (the current and the previous release are always kept), got "many"
"#,
        );
        check_body(
            &with("  releases:\n    keep: 51\n"),
            r#"
error: hoist.releases.current: required: the files destination that becomes a symlink
error: hoist.releases.keep: must be a whole number from 2 to 50 (the current and the previous release are always kept), got 51
"#,
        );
        check_body(
            "files:\n  - source: /\n    destination: /srv/shop/current\n  - source: etc\n    destination: /srv\nhoist:\n  releases:\n    current: /srv/shop/current\n",
            r#"
error: files[1].destination: /srv contains hoist.releases.current "/srv/shop/current": with releases, files go into current or beside it, not around it
"#,
        );
        check_body(
            "hoist: [releases]\n",
            "error: hoist: expected a mapping (with releases), found a list",
        );
        check_body(
            "hoist:\n  releases:\n    current: /\n",
            "error: hoist.releases.current: must not be / (releases/ is made beside it)",
        );
    }

    #[test]
    fn minimal_appspec_is_valid_and_empty() {
        check(HEAD, "");
        check(
            r#"
version: "0.0"
os: linux
"#,
            "",
        );
        // CodeDeploy compares with the float 0.0, so an integer 0 passes too.
        check("version: 0\nos: linux\n", "");
    }

    #[test]
    fn empty_appspec() {
        for text in [
            "",
            "   \n\t\n",
            "# only a comment\n\n# and another\n",
            "---\n",
        ] {
            check(text, "error: appspec is empty");
        }
    }

    #[test]
    fn syntax_errors_say_line_and_column() {
        check(
            r#"
version: 0.0
os: linux
hooks:
  AfterInstall:
    - location: a.sh
   timeout: 3
"#,
            "error: invalid yaml at line 7, column 4: did not find expected key, while parsing a block mapping at line 5 column 3",
        );
        check(
            "version: 0.0\nfiles: [\n",
            "error: invalid yaml at line 3, column 1: did not find expected node content, while parsing a flow node",
        );
        check(
            "version: 0.0\nversion: 0.0\nos: linux\n",
            "error: invalid yaml at line 1, column 1: duplicate entry with key \"version\"",
        );
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        check(
            "- version: 0.0\n",
            "error: expected a mapping of appspec keys (version, os, files, hooks, ...), found a list",
        );
        check(
            "hello\n",
            "error: expected a mapping of appspec keys (version, os, files, hooks, ...), found the string \"hello\"",
        );
    }

    #[test]
    fn version_and_os() {
        let cases: &[(&str, &str)] = &[
            ("os: linux\n", "error: version: required"),
            ("version:\nos: linux\n", "error: version: required"),
            ("version: 1.0\nos: linux\n", "error: version: must be 0.0, got 1.0"),
            ("version: \"0\"\nos: linux\n", "error: version: must be 0.0, got \"0\""),
            ("version: 0.0.0\nos: linux\n", "error: version: must be 0.0, got \"0.0.0\""),
            ("version: [0.0]\nos: linux\n", "error: version: must be 0.0, got a list"),
            ("version: 0.0\n", "error: os: required"),
            (
                "version: 0.0\nos: windows\n",
                "error: os: this host runs linux; an appspec for os windows cannot be deployed here",
            ),
            ("version: 0.0\nos: Linux\n", "error: os: must be linux, got \"Linux\""),
            ("version: 0.0\nos: 7\n", "error: os: must be linux, got 7"),
            ("{}\n", "error: version: required\nerror: os: required"),
        ];
        for (yaml, expected) in cases {
            check(yaml, expected);
        }
    }

    #[test]
    fn unknown_top_level_keys_are_warnings() {
        check(
            r#"
version: 0.0
os: linux
Hooks:
  AfterInstall:
    - location: a.sh
1: one
"#,
            "warning: Hooks: unknown key, ignored\nwarning: 1: unknown key, ignored",
        );
    }

    #[test]
    fn files() {
        let cases: &[(&str, &str)] = &[
            (
                r#"
files:
  - source: /
    destination: /var/www/app
  - source: ""
    destination: /srv/all
  - source: config/app.conf
    destination: /etc/app
"#,
                r#"
file "/" -> /var/www/app
file "" -> /srv/all
file "config/app.conf" -> /etc/app
"#,
            ),
            ("files:\n", ""),
            ("files: []\n", ""),
            (
                r#"
files:
  - source: a
    destination: /x
  - source: b
"#,
                "error: files[1].destination: required",
            ),
            (
                r#"
files:
  - destination: /x
  - source: b
    destination:
"#,
                "error: files[0].source: required\nerror: files[1].destination: required",
            ),
            (
                r#"
files:
  - source: a
    destination: var/www
"#,
                "error: files[0].destination: must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got \"var/www\")",
            ),
            (
                r#"
files:
  - source: [a]
    destination: 5
"#,
                "error: files[0].source: expected a string, found a list\nerror: files[0].destination: expected a string, found the number 5",
            ),
            (
                "files:\n  source: a\n  destination: /x\n",
                "error: files: expected a list, found a mapping",
            ),
            (
                "files:\n  - a:/x\n",
                "error: files[0]: expected a files entry (a mapping with source and destination), found the string \"a:/x\"",
            ),
            (
                r#"
files:
  - source: a
    destination: /x
    owner: root
"#,
                "file \"a\" -> /x\nwarning: files[0].owner: unknown key, ignored",
            ),
        ];
        for (yaml, expected) in cases {
            check_body(yaml, expected);
        }
    }

    #[test]
    fn file_exists_behavior() {
        for b in ["DISALLOW", "OVERWRITE", "RETAIN"] {
            check_body(
                &format!("file_exists_behavior: {b}\n"),
                &format!("file_exists_behavior {b}"),
            );
        }
        check_body("file_exists_behavior:\n", "");
        check_body(
            "file_exists_behavior: overwrite\n",
            "error: file_exists_behavior: must be one of DISALLOW, OVERWRITE, RETAIN, got \"overwrite\"",
        );
        check_body(
            "file_exists_behavior: [RETAIN]\n",
            "error: file_exists_behavior: expected a string, found a list",
        );
    }

    #[test]
    fn permissions() {
        let cases: &[(&str, &str)] = &[
            (
                "permissions:\n  - object: /var/www\n",
                "permission /var/www",
            ),
            (
                r#"
permissions:
  - object: /var/www/html
    pattern: "*.html"
    except: [secret.html, "tmp*"]
    type:
      - file
    owner: www-data
    group: 33
    mode: 0644
"#,
                r#"permission /var/www/html pattern "*.html" except ["secret.html", "tmp*"] types [File] owner www-data group 33 mode 0644"#,
            ),
            (
                "permissions:\n  - object: /d\n    type: [directory, file]\n    pattern:\n    except:\n",
                "permission /d types [Directory, File]",
            ),
            (
                "permissions:\n  - object: /d\n    type: []\n",
                "permission /d types []\nwarning: permissions[0].type: empty list: this entry applies to nothing",
            ),
            (
                "permissions:\n  - pattern: \"*\"\n  - object:\n",
                "error: permissions[0].object: required\nerror: permissions[1].object: required",
            ),
            (
                "permissions:\n  - object: var/www\n",
                "error: permissions[0].object: must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got \"var/www\")",
            ),
            (
                "permissions:\n  - object: /d\n    type: [file, link, Directory]\n",
                "error: permissions[0].type[1]: must be file or directory, got \"link\"\nerror: permissions[0].type[2]: must be file or directory, got \"Directory\"",
            ),
            (
                "permissions:\n  - object: /d\n    type: file\n",
                "error: permissions[0].type: expected a list, found the string \"file\"",
            ),
            (
                "permissions:\n  - object: /d\n    except: \"*.tmp\"\n    pattern: [a]\n",
                "error: permissions[0].pattern: expected a string, found a list\nerror: permissions[0].except: expected a list, found the string \"*.tmp\"",
            ),
            (
                "permissions:\n  - object: /d\n    owner: \"\"\n    group: [a]\n",
                "error: permissions[0].owner: must not be empty\nerror: permissions[0].group: expected a name (a string), found a list",
            ),
            (
                "permissions:\n  - object: /d\n    mod: 644\n",
                "permission /d\nwarning: permissions[0].mod: unknown key, ignored",
            ),
            (
                "permissions:\n  - /var/www\n",
                "error: permissions[0]: expected a permissions entry (a mapping), found the string \"/var/www\"",
            ),
            (
                "permissions:\n  object: /var/www\n",
                "error: permissions: expected a list, found a mapping",
            ),
        ];
        for (yaml, expected) in cases {
            check_body(yaml, expected);
        }
    }

    /// The written digits are the mode, however YAML types them; see `permissions::mode`.
    #[test]
    fn mode_is_read_as_written_digits() {
        let cases: &[(&str, &str)] = &[
            ("644", "mode 0644"),
            ("0644", "mode 0644"),
            ("\"0644\"", "mode 0644"),
            ("'644'", "mode 0644"),
            ("755", "mode 0755"),
            ("0755", "mode 0755"),
            ("4755", "mode 4755"),
            ("1777", "mode 1777"),
            ("7", "mode 0007"),
            ("0", "mode 0000"),
            ("00", "mode 0000"),
            ("0000", "mode 0000"),
        ];
        for (mode, expected) in cases {
            check_body(
                &format!("permissions:\n  - object: /d\n    mode: {mode}\n"),
                &format!("permission /d {expected}"),
            );
        }
        let bad: &[(&str, &str)] = &[
            ("648", "648"),
            ("0689", "\"0689\""),
            ("\"9\"", "\"9\""),
            ("10644", "10644"),
            ("\"00644\"", "\"00644\""),
            ("-644", "-644"),
            ("6.44", "6.44"),
            ("\"\"", "\"\""),
            ("rw-r--r--", "\"rw-r--r--\""),
            ("true", "true"),
            ("[644]", "a list"),
        ];
        for (mode, shown) in bad {
            check_body(
                &format!("permissions:\n  - object: /d\n    mode: {mode}\n"),
                &format!(
                    "error: permissions[0].mode: must be 1 to 4 octal digits (0-7), got {shown}"
                ),
            );
        }
    }

    #[test]
    fn acls() {
        check_body(
            r#"
permissions:
  - object: /srv/app
    acls:
      - u:bob:rwx
      - d:u:bob:rw
      - g:web:r-x
      - m::rw
      - d:o::r
"#,
            r#"permission /srv/app acls ["user:bob:rwx", "default:user:bob:rw-", "group:web:r-x", "mask::rw-", "default:other::r--"]"#,
        );
        check_body(
            r#"
permissions:
  - object: /srv/app
    acls:
      - g::r-x
      - u:bob:rwz
      - o:bob:r
      - 5
"#,
            r#"
error: permissions[0].acls[0]: acl entry "g::r-x" is a base entry; set it with mode instead
error: permissions[0].acls[1]: acl entry "u:bob:rwz" has an invalid permission character 'z' (allowed: r, w, x, -, or one octal digit)
error: permissions[0].acls[2]: invalid acl entry "o:bob:r": other entries take no name
error: permissions[0].acls[3]: expected a string, found the number 5
"#,
        );
        check_body(
            "permissions:\n  - object: /d\n    acls: u:bob:rwx\n",
            "error: permissions[0].acls: expected a list, found the string \"u:bob:rwx\"",
        );
    }

    #[test]
    fn selinux_context() {
        let cases: &[(&str, &str)] = &[
            (
                "context:\n      type: httpd_sys_content_t\n",
                "permission /d context type=httpd_sys_content_t",
            ),
            (
                "context:\n      name: unconfined_u\n      type: httpd_sys_content_t\n      range: s0-s15:c0.c1023\n",
                "permission /d context type=httpd_sys_content_t user=unconfined_u range=s0-s15:c0.c1023",
            ),
            (
                "context:\n      name: unconfined_u\n",
                "error: permissions[0].context.type: required",
            ),
            (
                "context:\n      type: t\n      range: s1-s0\n",
                "error: permissions[0].context.range: invalid selinux range \"s1-s0\": the high sensitivity is below the low one",
            ),
            (
                "context:\n      type: t\n      range: s0:c2000\n",
                "error: permissions[0].context.range: invalid selinux range \"s0:c2000\": bad category \"c2000\"",
            ),
            (
                "context:\n      type: \"\"\n      name: [u]\n      role: object_r\n",
                "error: permissions[0].context.name: expected a string, found a list\nerror: permissions[0].context.type: must not be empty\nwarning: permissions[0].context.role: unknown key, ignored",
            ),
            (
                "context: httpd_sys_content_t\n",
                "error: permissions[0].context: expected a context (a mapping with name, type, range), found the string \"httpd_sys_content_t\"",
            ),
        ];
        for (context, expected) in cases {
            check_body(
                &format!("permissions:\n  - object: /d\n    {context}"),
                expected,
            );
        }
    }

    #[test]
    fn hooks_in_lifecycle_order() {
        check_body(
            r#"
hooks:
  ValidateService:
    - location: scripts/check.sh
  AfterInstall:
    - location: scripts/one.sh
      timeout: 300
      runas: root
    - location: /scripts/two.sh
  ApplicationStop:
    - location: scripts/stop.sh
      timeout: "60"
  BeforeInstall: []
  AfterAllowTraffic:
    - location: " scripts/padded.sh "
  BeforeBlockTraffic:
    - location: scripts/drain.sh
      runas: 1000
"#,
            r#"
hook BeforeBlockTraffic scripts/drain.sh runas 1000
hook ApplicationStop scripts/stop.sh timeout 60
hook AfterInstall scripts/one.sh timeout 300 runas root
hook AfterInstall /scripts/two.sh
hook ValidateService scripts/check.sh
hook AfterAllowTraffic scripts/padded.sh
"#,
        );
        check_body("hooks:\n", "");
    }

    #[test]
    fn hook_timeouts() {
        let good: &[(&str, u64)] = &[("1", 1), ("59", 59), ("7200", 7200), ("\"300\"", 300)];
        for (timeout, secs) in good {
            check_body(
                &format!(
                    "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: {timeout}\n"
                ),
                &format!("hook AfterInstall a.sh timeout {secs}"),
            );
        }
        check_body(
            "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout:\n",
            "hook AfterInstall a.sh",
        );
        let bad: &[(&str, &str)] = &[
            ("0", "0"),
            ("-5", "-5"),
            ("1.5", "1.5"),
            ("soon", "\"soon\""),
            ("\"30s\"", "\"30s\""),
            ("\"0\"", "\"0\""),
            ("\"\"", "\"\""),
            ("true", "true"),
            ("[60]", "a list"),
        ];
        for (timeout, shown) in bad {
            check_body(
                &format!("hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: {timeout}\n"),
                &format!("error: hooks.AfterInstall[0].timeout: must be a positive whole number of seconds, got {shown}"),
            );
        }
    }

    #[test]
    fn hook_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "hooks:\n  AfterInstall:\n    - timeout: 5\n",
                "error: hooks.AfterInstall[0].location: required",
            ),
            (
                "hooks:\n  AfterInstall:\n    - location: \"  \"\n",
                "error: hooks.AfterInstall[0].location: must not be empty",
            ),
            (
                "hooks:\n  AfterInstall:\n    - location: a.sh\n      runas: \"\"\n",
                "error: hooks.AfterInstall[0].runas: must not be empty",
            ),
            (
                "hooks:\n  AfterInstall:\n    location: a.sh\n",
                "error: hooks.AfterInstall: expected a list of scripts, found a mapping",
            ),
            (
                "hooks:\n  AfterInstall:\n    - a.sh\n",
                "error: hooks.AfterInstall[0]: expected a script (a mapping with location, timeout, runas), found the string \"a.sh\"",
            ),
            (
                "hooks:\n  - AfterInstall\n",
                "error: hooks: expected a mapping of lifecycle events to scripts, found a list",
            ),
            (
                "hooks:\n  Install:\n    - timeout: 5\n",
                "error: hooks.Install[0].location: required\nwarning: hooks.Install: Install is run by the agent itself: these scripts will not run",
            ),
        ];
        for (yaml, expected) in cases {
            check_body(yaml, expected);
        }
    }

    /// Regression: `AfterInstall:` with nothing after it was an error; CodeDeploy (Ruby
    /// `application_specification_test.rb`, "With empty hook") reads it as no scripts.
    #[test]
    fn null_hook_value_is_no_scripts_without_a_warning() {
        check_body("hooks:\n  AfterInstall:\n", "");
        check_body(
            "hooks:\n  AfterInstall:\n  ApplicationStart:\n    - location: start.sh\n",
            "hook ApplicationStart start.sh",
        );
    }

    /// Regression: hooks under DownloadBundle or Install were errors; CodeDeploy parses them
    /// (its v2 tests have hooks for every event) and never runs them.
    #[test]
    fn builtin_event_hooks_are_a_warning_that_they_will_not_run() {
        check_body(
            "hooks:\n  Install:\n    - location: a.sh\n  DownloadBundle:\n    - location: b.sh\n  AfterInstall:\n    - location: c.sh\n",
            r#"
hook AfterInstall c.sh
warning: hooks.Install: Install is run by the agent itself: these scripts will not run
warning: hooks.DownloadBundle: DownloadBundle is run by the agent itself: these scripts will not run
"#,
        );
    }

    /// `sudo` (a hook key) and `context.user` are ignored, with a warning saying what they do
    /// in CodeDeploy.
    #[test]
    fn sudo_and_context_user_warn_what_codedeploy_does_with_them() {
        check_body(
            "hooks:\n  AfterInstall:\n    - location: a.sh\n      runas: app\n      sudo: true\n",
            "hook AfterInstall a.sh runas app\nwarning: hooks.AfterInstall[0].sudo: ignored: CodeDeploy's agent runs the script through sudo (for an agent that is not root); hoist runs it as root, or switches to runas directly",
        );
        check_body(
            "permissions:\n  - object: /d\n    context:\n      user: system_u\n      type: t\n",
            "permission /d context type=t\nwarning: permissions[0].context.user: ignored: CodeDeploy's agent reads the SELinux user from name, not user, so it sets no user from this key; hoist does the same (write name: to set it)",
        );
    }

    #[test]
    fn unknown_events_and_hook_keys_are_warnings() {
        check_body(
            r#"
hooks:
  AfterInstal:
    - location: typo.sh
  afterinstall:
    - location: lower.sh
  Deploy:
    - location: deploy.sh
  AfterInstall:
    - location: a.sh
      timout: 30
"#,
            r#"
hook AfterInstall a.sh
warning: hooks.AfterInstal: unknown lifecycle event, ignored
warning: hooks.afterinstall: unknown lifecycle event, ignored (did you mean AfterInstall?)
warning: hooks.Deploy: unknown lifecycle event, ignored
warning: hooks.AfterInstall[0].timout: unknown key, ignored
"#,
        );
        // CodeDeploy rejects a bad script even under an event it never runs.
        check_body(
            "hooks:\n  Deploy:\n    - timeout: 5\n",
            "error: hooks.Deploy[0].location: required\nwarning: hooks.Deploy: unknown lifecycle event, ignored",
        );
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        check(
            r#"
version: 1
os: windows
extra: true
files:
  - source: app
  - source: conf
    destination: etc/app
file_exists_behavior: KEEP
permissions:
  - object: /srv/app
    mode: 0698
    acls: [u::rwx]
    context:
      range: s2-s1
hooks:
  Install:
    - location: i.sh
  AfterInstall:
    - location: a.sh
      timeout: soon
    - runas: root
  Later:
    - location: l.sh
"#,
            r#"
error: version: must be 0.0, got 1
error: os: this host runs linux; an appspec for os windows cannot be deployed here
error: files[0].destination: required
error: files[1].destination: must be an absolute path; CodeDeploy would resolve it against the agent's working directory (got "etc/app")
error: file_exists_behavior: must be one of DISALLOW, OVERWRITE, RETAIN, got "KEEP"
error: permissions[0].mode: must be 1 to 4 octal digits (0-7), got "0698"
error: permissions[0].acls[0]: acl entry "u::rwx" is a base entry; set it with mode instead
error: permissions[0].context.type: required
error: permissions[0].context.range: invalid selinux range "s2-s1": the high sensitivity is below the low one
error: hooks.AfterInstall[0].timeout: must be a positive whole number of seconds, got "soon"
error: hooks.AfterInstall[1].location: required
warning: extra: unknown key, ignored
warning: hooks.Install: Install is run by the agent itself: these scripts will not run
warning: hooks.Later: unknown lifecycle event, ignored
"#,
        );
    }

    #[test]
    fn merge_keys_are_resolved() {
        check_body(
            r#"
x-script: &script
  timeout: 120
  runas: deploy
hooks:
  AfterInstall:
    - <<: *script
      location: a.sh
"#,
            "hook AfterInstall a.sh timeout 120 runas deploy\nwarning: x-script: unknown key, ignored",
        );
    }

    #[test]
    fn full_realistic_appspec() {
        check(
            r#"
# A web application deployed to /var/www/shop.
version: 0.0
os: linux
files:
  - source: /
    destination: /var/www/shop
  - source: config/shop.conf
    destination: /etc/nginx/conf.d
  - source: bin/shopctl
    destination: /usr/local/bin
file_exists_behavior: OVERWRITE
permissions:
  - object: /var/www/shop
    pattern: "**"
    owner: www-data
    group: www-data
    mode: 0750
    type:
      - directory
  - object: /var/www/shop
    except: ["*.sh"]
    owner: www-data
    group: www-data
    mode: 640
    type:
      - file
    acls:
      - "u:deploy:rw"
      - "d:g:ops:rx"
      - "m::rwx"
    context:
      name: system_u
      type: httpd_sys_content_t
      range: s0
  - object: /usr/local/bin/shopctl
    mode: "0755"
hooks:
  ApplicationStop:
    - location: scripts/stop.sh
      timeout: 120
  BeforeInstall:
    - location: scripts/backup.sh
      timeout: 600
      runas: root
  AfterInstall:
    - location: scripts/migrate.sh
      timeout: 900
      runas: www-data
    - location: scripts/warm-cache.sh
  ApplicationStart:
    - location: scripts/start.sh
      runas: root
  ValidateService:
    - location: scripts/healthcheck.sh
      timeout: 60
"#,
            r#"
file "/" -> /var/www/shop
file "config/shop.conf" -> /etc/nginx/conf.d
file "bin/shopctl" -> /usr/local/bin
file_exists_behavior OVERWRITE
permission /var/www/shop types [Directory] owner www-data group www-data mode 0750
permission /var/www/shop except ["*.sh"] types [File] owner www-data group www-data mode 0640 acls ["user:deploy:rw-", "default:group:ops:r-x", "mask::rwx"] context type=httpd_sys_content_t user=system_u range=s0
permission /usr/local/bin/shopctl mode 0755
hook ApplicationStop scripts/stop.sh timeout 120
hook BeforeInstall scripts/backup.sh timeout 600 runas root
hook AfterInstall scripts/migrate.sh timeout 900 runas www-data
hook AfterInstall scripts/warm-cache.sh
hook ApplicationStart scripts/start.sh runas root
hook ValidateService scripts/healthcheck.sh timeout 60
"#,
        );
    }

    #[test]
    fn model_values_of_a_parsed_appspec() {
        // The rendering above leaves defaults out; check them on the model itself once.
        let parsed = parse(
            "version: 0.0\nos: linux\npermissions:\n  - object: /d\nhooks:\n  AfterInstall:\n    - location: a.sh\n",
        )
        .unwrap();
        let p = &parsed.spec.permissions[0];
        assert_eq!(p.pattern, "**");
        assert_eq!(p.types, [ObjectType::File, ObjectType::Directory]);
        assert!(p.except.is_empty() && p.acls.is_empty());
        assert_eq!(
            (p.owner.as_deref(), p.group.as_deref(), p.mode),
            (None, None, None)
        );
        let hooks = parsed.spec.hooks_for(crate::LifecycleEvent::AfterInstall);
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].timeout_secs, 3600);
        assert_eq!(hooks[0].runas, None);
        assert_eq!(parsed.spec.file_exists_behavior, None);
        assert!(parsed.warnings.is_empty());
    }
}
