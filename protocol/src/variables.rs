//! Deployment variables: `KEY=VALUE` pairs a deployment carries to its hooks, each an
//! environment variable of that exact name. The rules are here, in the wire crate, because
//! both ends apply them: the coordinator refuses a bad variable when a deployment or a
//! pipeline is created, and the agent checks a command's variables again before it runs a
//! hook (a coordinator of another version, or a tampered store, is no reason to let a
//! command set `PATH` or `DEPLOYMENT_ID`).
//!
//! Deliberately not here: where variables come from (a stage, `--var`) or how a hook's
//! environment is assembled (the agent's `hooks::env`).

use std::collections::BTreeMap;

/// Most variables one deployment may carry.
pub const MAX_VARIABLES: usize = 64;
/// Longest variable name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most bytes of names and values together.
pub const MAX_TOTAL_LEN: usize = 32 * 1024;

/// Names a deployment may not set: the hook variables the agent sets itself, and what the
/// agent or `runas` puts in every hook's environment.
pub const RESERVED: [&str; 11] = [
    "LIFECYCLE_EVENT",
    "DEPLOYMENT_ID",
    "APPLICATION_NAME",
    "DEPLOYMENT_GROUP_NAME",
    "DEPLOYMENT_GROUP_ID",
    "PATH",
    "LANG",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
];

/// Names beginning with this are reserved too (BUNDLE_BUCKET, BUNDLE_COMMIT, ...).
pub const RESERVED_PREFIX: &str = "BUNDLE_";

/// Why `name` cannot be a deployment variable, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Some("a variable name must match [A-Z_][A-Z0-9_]*".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("a variable name has at most {MAX_NAME_LEN} bytes"));
    }
    if RESERVED.contains(&name) || name.starts_with(RESERVED_PREFIX) {
        return Some("is a reserved hook variable".into());
    }
    None
}

/// Why `value` cannot be a deployment variable's value, if it cannot.
pub fn value_problem(value: &str) -> Option<String> {
    if value.len() > MAX_VALUE_LEN {
        return Some(format!(
            "the value has {} bytes; at most {MAX_VALUE_LEN} are allowed",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Some("the value contains a NUL byte".into());
    }
    None
}

/// Every problem of a set of variables, each as `NAME: problem` (the name escaped by
/// the caller when printed), the count and total size last. Empty when they are fine.
pub fn problems(vars: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (name, value) in vars {
        total = total.saturating_add(name.len()).saturating_add(value.len());
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        if let Some(p) = name_problem(name) {
            out.push(format!("{shown:?}: {p}"));
        }
        if let Some(p) = value_problem(value) {
            out.push(format!("{shown:?}: {p}"));
        }
    }
    if vars.len() > MAX_VARIABLES {
        out.push(format!(
            "{} variables; at most {MAX_VARIABLES} are allowed",
            vars.len()
        ));
    }
    if total > MAX_TOTAL_LEN {
        out.push(format!(
            "the variables take {total} bytes; at most {MAX_TOTAL_LEN} are allowed"
        ));
    }
    out
}

/// Parses a `KEY=VALUE` command-line argument (`--var`).
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!("{arg:?} is not KEY=VALUE"));
    };
    if let Some(p) = name_problem(name).or_else(|| value_problem(value)) {
        return Err(format!("{name:?}: {p}"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern_and_avoid_the_reserved_ones() {
        for good in ["DEPLOY_MODE", "_X", "A1", "X_2_Y"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in ["", "1A", "deploy_mode", "A-B", "A B", "É"] {
            assert!(
                name_problem(bad).is_some_and(|p| p.contains("[A-Z_]")),
                "{bad}"
            );
        }
        for reserved in [
            "LIFECYCLE_EVENT",
            "DEPLOYMENT_ID",
            "PATH",
            "HOME",
            "BUNDLE_COMMIT",
        ] {
            assert_eq!(
                name_problem(reserved).as_deref(),
                Some("is a reserved hook variable"),
                "{reserved}"
            );
        }
        assert!(name_problem(&"A".repeat(MAX_NAME_LEN + 1)).is_some());
    }

    #[test]
    fn every_problem_is_listed_with_the_bounds() {
        let mut vars = BTreeMap::new();
        vars.insert("PATH".to_owned(), "/tmp".to_owned());
        vars.insert("low".to_owned(), "x".to_owned());
        vars.insert("BIG".to_owned(), "x".repeat(MAX_VALUE_LEN + 1));
        vars.insert("NUL".to_owned(), "a\0b".to_owned());
        let got = problems(&vars);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("\"PATH\": is a reserved")));
        assert!(got.iter().any(|p| p.starts_with("\"BIG\": the value has")));
        let many: BTreeMap<String, String> = (0..=MAX_VARIABLES)
            .map(|i| (format!("V{i}"), "x".repeat(600)))
            .collect();
        let got = problems(&many);
        assert!(
            got.iter().any(|p| p.contains("variables; at most 64")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|p| p.contains("bytes; at most 32768")),
            "{got:?}"
        );
        assert!(problems(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_assignment("MODE=a=b"),
            Ok(("MODE".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(
            parse_assignment("EMPTY="),
            Ok(("EMPTY".to_owned(), String::new()))
        );
        assert!(parse_assignment("MODE").is_err());
        assert!(parse_assignment("DEPLOYMENT_ID=x").is_err());
    }
}
