//! Property: every appspec the validator accepts round-trips through the model.
//!
//! A generated valid [`AppSpec`] is rendered to YAML (with `serde_yaml`'s emitter, which
//! quotes whatever would otherwise read as another type), parsed back, and must come out
//! equal, with no warning; and the appspecs under `examples/` (and the fuzz seeds' shapes)
//! parse, render and parse to the same model. The renderer lives here, not in the crate: the
//! product only ever reads appspecs.
//!
//! Not covered here: which invalid appspecs are refused and with what message (the table
//! tests in `src/parse.rs` do that).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use hoist_appspec::{
    parse, AppSpec, FileExistsBehavior, FileMapping, Hook, LifecycleEvent, ObjectType, Permission,
    SelinuxContext,
};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

// ---------------------------------------------------------------------------------------------
// Rendering a model as appspec YAML

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn path(p: &std::path::Path) -> Value {
    string(p.to_str().unwrap())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(string(k), v);
    }
    Value::Mapping(m)
}

/// The appspec text of `spec`, with every field written out (defaults included) so that a
/// dropped default shows up as a difference too.
fn render(spec: &AppSpec) -> String {
    let mut top = vec![("version", string(&spec.version)), ("os", string(&spec.os))];
    if !spec.files.is_empty() {
        let files = spec
            .files
            .iter()
            .map(|f| {
                map(vec![
                    ("source", string(&f.source)),
                    ("destination", path(&f.destination)),
                ])
            })
            .collect();
        top.push(("files", Value::Sequence(files)));
    }
    if let Some(b) = spec.file_exists_behavior {
        top.push(("file_exists_behavior", string(b.as_str())));
    }
    if !spec.permissions.is_empty() {
        let permissions = spec.permissions.iter().map(render_permission).collect();
        top.push(("permissions", Value::Sequence(permissions)));
    }
    if !spec.hooks.is_empty() {
        let mut hooks = Mapping::new();
        for (event, scripts) in &spec.hooks {
            let scripts = scripts
                .iter()
                .map(|h| {
                    let mut entry = vec![
                        ("location", string(&h.location)),
                        ("timeout", Value::Number(h.timeout_secs.into())),
                    ];
                    if let Some(runas) = &h.runas {
                        entry.push(("runas", string(runas)));
                    }
                    map(entry)
                })
                .collect();
            hooks.insert(string(event.as_str()), Value::Sequence(scripts));
        }
        top.push(("hooks", Value::Mapping(hooks)));
    }
    serde_yaml::to_string(&map(top)).unwrap()
}

fn render_permission(p: &Permission) -> Value {
    let strings = |items: &[String]| Value::Sequence(items.iter().map(|s| string(s)).collect());
    let types = p
        .types
        .iter()
        .map(|t| match t {
            ObjectType::File => string("file"),
            ObjectType::Directory => string("directory"),
        })
        .collect();
    let mut entry = vec![
        ("object", path(&p.object)),
        ("pattern", string(&p.pattern)),
        ("except", strings(&p.except)),
        ("type", Value::Sequence(types)),
        ("acls", strings(&p.acls)),
    ];
    if let Some(owner) = &p.owner {
        entry.push(("owner", string(owner)));
    }
    if let Some(group) = &p.group {
        entry.push(("group", string(group)));
    }
    if let Some(mode) = p.mode {
        // The digits as written, quoted by the emitter when they lead with 0.
        entry.push(("mode", string(&format!("{mode:04o}"))));
    }
    if let Some(c) = &p.context {
        let mut context = vec![("type", string(&c.type_))];
        if let Some(user) = &c.user {
            context.push(("name", string(user)));
        }
        if let Some(range) = &c.range {
            context.push(("range", string(range)));
        }
        entry.push(("context", map(context)));
    }
    map(entry)
}

// ---------------------------------------------------------------------------------------------
// Generating valid models

/// Any printable ASCII, YAML's special characters included (`:`, `#`, `-`, quotes, `{`).
fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

/// Printable ASCII with no space at either end (fields the parser trims).
fn trimmed() -> impl Strategy<Value = String> {
    "([!-~]([ -~]{0,10}[!-~])?)"
}

fn absolute() -> impl Strategy<Value = PathBuf> {
    "/([ -~]{0,12}[!-~])?".prop_map(PathBuf::from)
}

/// A user or group: a name, or a numeric id as YAML would read it unquoted.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![trimmed(), any::<u32>().prop_map(|n| n.to_string())]
}

fn acl_name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_-]{0,7}"
}

/// One ACL entry in the canonical form the parser produces.
fn acl() -> impl Strategy<Value = String> {
    let perms = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, w, x)| {
        format!(
            "{}{}{}",
            if r { 'r' } else { '-' },
            if w { 'w' } else { '-' },
            if x { 'x' } else { '-' }
        )
    });
    let named = || {
        (prop_oneof![Just("user"), Just("group")], acl_name())
            .prop_map(|(kind, name)| format!("{kind}:{name}"))
    };
    let access = prop_oneof![named(), Just("mask:".to_owned())];
    let default = prop_oneof![
        named(),
        Just("user:".to_owned()),
        Just("group:".to_owned()),
        Just("mask:".to_owned()),
        Just("other:".to_owned()),
    ]
    .prop_map(|entry| format!("default:{entry}"));
    (prop_oneof![access, default], perms).prop_map(|(entry, perms)| format!("{entry}:{perms}"))
}

/// A valid MLS/MCS range: ascending sensitivities, disjoint ascending category ranges.
fn selinux_range() -> impl Strategy<Value = String> {
    let levels = (0u32..16, proptest::option::of(0u32..16)).prop_map(|(low, up)| match up {
        Some(up) => format!("s{low}-s{}", low + up),
        None => format!("s{low}"),
    });
    let categories = proptest::collection::btree_set(0u32..1024, 0..6).prop_map(|set| {
        let bounds: Vec<u32> = set.into_iter().collect();
        bounds
            .chunks(2)
            .map(|pair| match pair {
                [first, last] => format!("c{first}.c{last}"),
                [only] => format!("c{only}"),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    (levels, categories).prop_map(|(levels, categories)| {
        if categories.is_empty() {
            levels
        } else {
            format!("{levels}:{categories}")
        }
    })
}

fn context() -> impl Strategy<Value = SelinuxContext> {
    let word = "[a-z_]{1,12}";
    (
        proptest::option::of(word),
        word,
        proptest::option::of(selinux_range()),
    )
        .prop_map(|(user, type_, range)| SelinuxContext { user, type_, range })
}

fn permission() -> impl Strategy<Value = Permission> {
    let types = proptest::collection::vec(
        prop_oneof![Just(ObjectType::File), Just(ObjectType::Directory)],
        1..3,
    );
    (
        (
            absolute(),
            text(),
            proptest::collection::vec(text(), 0..3),
            types,
        ),
        (
            proptest::option::of(name()),
            proptest::option::of(name()),
            proptest::option::of(0u32..=0o7777),
        ),
        (
            proptest::collection::vec(acl(), 0..3),
            proptest::option::of(context()),
        ),
    )
        .prop_map(
            |((object, pattern, except, types), (owner, group, mode), (acls, context))| {
                Permission {
                    object,
                    pattern,
                    except,
                    types,
                    owner,
                    group,
                    mode,
                    acls,
                    context,
                }
            },
        )
}

fn hook() -> impl Strategy<Value = Hook> {
    (
        trimmed(),
        prop_oneof![1u64..=7200, 1u64..=u64::MAX],
        proptest::option::of(name()),
    )
        .prop_map(|(location, timeout_secs, runas)| Hook {
            location,
            timeout_secs,
            runas,
        })
}

fn hooks() -> impl Strategy<Value = Vec<(LifecycleEvent, Vec<Hook>)>> {
    let events: Vec<LifecycleEvent> = LifecycleEvent::ALL
        .into_iter()
        .filter(|e| !e.is_builtin())
        .collect();
    proptest::sample::subsequence(events, 0..=9).prop_flat_map(|events| {
        events
            .into_iter()
            .map(|event| proptest::collection::vec(hook(), 1..3).prop_map(move |h| (event, h)))
            .collect::<Vec<_>>()
    })
}

fn appspec() -> impl Strategy<Value = AppSpec> {
    let file = (text(), absolute()).prop_map(|(source, destination)| FileMapping {
        source,
        destination,
    });
    let behavior = prop_oneof![
        Just(FileExistsBehavior::Disallow),
        Just(FileExistsBehavior::Overwrite),
        Just(FileExistsBehavior::Retain),
    ];
    (
        proptest::collection::vec(file, 0..4),
        proptest::option::of(behavior),
        proptest::collection::vec(permission(), 0..3),
        hooks(),
    )
        .prop_map(
            |(files, file_exists_behavior, permissions, hooks)| AppSpec {
                version: "0.0".to_owned(),
                os: "linux".to_owned(),
                files,
                file_exists_behavior,
                permissions,
                hooks,
                releases: None,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_valid_model_survives_render_and_parse(spec in appspec()) {
        let text = render(&spec);
        match parse(&text) {
            Ok(parsed) => {
                prop_assert_eq!(&parsed.spec, &spec, "rendered as:\n{}", text);
                prop_assert!(parsed.warnings.is_empty(), "warnings {:?} for:\n{}", parsed.warnings, text);
            }
            Err(invalid) => prop_assert!(false, "refused {:?}:\n{}", invalid.errors, text),
        }
    }
}

/// Accepted appspecs written by hand, in the spellings the model normalises (`mode: 0644`,
/// short ACLs, string timeouts, numeric owners, hooks out of order, merge keys).
const ACCEPTED: &[&str] = &[
    include_str!("../../examples/web-app/appspec.yml"),
    include_str!("../../examples/runas-app/appspec.yml"),
    "version: 0.0\nos: linux\n",
    r#"
version: "0.0"
os: linux
files:
  - source: /
    destination: /opt/app
  - {source: conf/app.conf, destination: /etc/app/}
file_exists_behavior: RETAIN
permissions:
  - object: " /opt/app "
    pattern: "*.sh"
    except: [skip.sh]
    type: [file]
    owner: 1000
    group: " www-data "
    mode: 4755
    acls: ["u:bob:7", "d:g:web:rx", "m::r", "bob:rw"]
    context: {name: system_u, type: httpd_sys_content_t, range: "s0-s1:c0.c5,c9"}
  - object: /opt/app/empty
    type: []
hooks:
  ValidateService:
    - location: " check.sh "
      timeout: "30"
      runas: 0
  BeforeInstall:
    - &stop {location: stop.sh, timeout: 5}
  AfterInstall:
    - <<: *stop
      runas: deploy
  Unknown: []
"#,
];

#[test]
fn accepted_appspecs_parse_render_and_parse_to_the_same_model() {
    for text in ACCEPTED {
        let first = parse(text).unwrap().spec;
        let rendered = render(&first);
        let second = parse(&rendered)
            .unwrap_or_else(|e| panic!("re-rendered appspec refused: {e:?}\n{rendered}"))
            .spec;
        assert_eq!(second, first, "rendered as:\n{rendered}");
    }
}
