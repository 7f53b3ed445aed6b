//! A hook's environment: never the agent's own, but an allowlist (PATH, LANG), then the
//! operator's environment file (`hooks.environment_file`, `KEY=VALUE` lines), then the
//! deployment's variables, each later source replacing a variable of an earlier one, so the
//! operator's file can never override what the deployment says. `runas` adds HOME, USER,
//! LOGNAME and SHELL when the script starts (`runas`).
//!
//! Which deployment variables there are (LIFECYCLE_EVENT, DEPLOYMENT_ID, ...) is the
//! caller's (`deployment`): this module knows no lifecycle event.

use std::path::Path;

use anyhow::{bail, Context};

/// PATH given to every hook.
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The complete environment of a hook: PATH and LANG (the agent's, else `C.UTF-8`), then
/// the variables of `environment_file`, then `deployment`'s, a later one replacing an
/// earlier one of the same name.
pub fn hook_environment(
    environment_file: Option<&Path>,
    deployment: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let lang = std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_string());
    let mut env = vec![
        ("PATH".to_string(), HOOK_PATH.to_string()),
        ("LANG".to_string(), lang),
    ];
    let from_file = match environment_file {
        Some(path) => read_environment_file(path)?,
        None => Vec::new(),
    };
    for (k, v) in from_file.into_iter().chain(deployment) {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    }
    Ok(env)
}

/// Reads an operator environment file: `KEY=VALUE` lines, `#` comments and blank lines
/// ignored, optional `export ` prefix, values optionally in single or double quotes.
///
/// Nothing is expanded (`$X` stays as written). In double quotes a backslash escapes
/// `"`, `\`, `$` and `` ` ``; single quotes keep everything literally. An unquoted value ends
/// at a ` #` comment.
fn read_environment_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading environment file {}", path.display()))?;
    parse_environment(&text).map_err(|(line, why)| {
        anyhow::anyhow!("environment file {} line {line}: {why}", path.display())
    })
}

/// Parses the text of an environment file; an error carries the 1-based line number.
fn parse_environment(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair = parse_environment_line(line).map_err(|e| (number, e.to_string()))?;
        vars.push(pair);
    }
    Ok(vars)
}

fn parse_environment_line(line: &str) -> anyhow::Result<(String, String)> {
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    };
    let Some((key, value)) = line.split_once('=') else {
        bail!("expected KEY=VALUE, found {line:?}");
    };
    let key = key.trim_end();
    let valid_key = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        bail!("{key:?} is not a valid variable name");
    }
    let value = value.trim_start();
    let (value, rest) = if let Some(body) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        let Some(end) = end else {
            bail!("unterminated double quote in the value of {key}");
        };
        (out, &body[end..])
    } else if let Some(body) = value.strip_prefix('\'') {
        let Some(end) = body.find('\'') else {
            bail!("unterminated single quote in the value of {key}");
        };
        (body[..end].to_string(), &body[end + 1..])
    } else {
        let end = value
            .char_indices()
            .find(|&(i, c)| c == '#' && i > 0 && value[..i].ends_with([' ', '\t']))
            .map_or(value.len(), |(i, _)| i);
        (value[..end].trim_end().to_string(), "")
    };
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        bail!("unexpected {rest:?} after the quoted value of {key}");
    }
    if value.contains('\0') {
        bail!("the value of {key} contains a NUL byte");
    }
    Ok((key.to_string(), value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, &str)]) {
        let got = parse_environment(text).unwrap();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "input: {text:?}");
    }

    fn check_err(text: &str, line: usize, contains: &str) {
        let (got_line, why) = parse_environment(text).unwrap_err();
        assert_eq!(got_line, line, "input: {text:?}: {why}");
        assert!(
            why.contains(contains),
            "{why:?} should contain {contains:?}"
        );
    }

    #[test]
    fn environment_file_values() {
        check("", &[]);
        check("\n# comment\n   \n", &[]);
        check("A=1", &[("A", "1")]);
        check("A=", &[("A", "")]);
        check("export A=1", &[("A", "1")]);
        check("export\tA=1", &[("A", "1")]);
        check("exported=1", &[("exported", "1")]);
        check("  A = 1  ", &[("A", "1")]);
        check("A=a b c", &[("A", "a b c")]);
        check("A=b # comment", &[("A", "b")]);
        check("A=http://x/#frag", &[("A", "http://x/#frag")]);
        check("A=x=y", &[("A", "x=y")]);
        check(
            "A=\"quoted # not a comment\"",
            &[("A", "quoted # not a comment")],
        );
        check(
            "A=\"a \\\"b\\\" \\\\ \\$X \\n\"",
            &[("A", "a \"b\" \\ $X \\n")],
        );
        check("A='$HOME \\ \"x\"'", &[("A", "$HOME \\ \"x\"")]);
        check("A='x' # trailing comment", &[("A", "x")]);
        check("A=$HOME", &[("A", "$HOME")]);
        check("_A1=1\nB=2\r\n", &[("_A1", "1"), ("B", "2")]);
        check("A=1\nA=2", &[("A", "1"), ("A", "2")]);
    }

    #[test]
    fn environment_file_errors() {
        check_err("A=1\nnot a pair\n", 2, "expected KEY=VALUE");
        check_err("1A=x", 1, "not a valid variable name");
        check_err("A-B=x", 1, "not a valid variable name");
        check_err("=x", 1, "not a valid variable name");
        check_err("# ok\n\nA=\"open", 3, "unterminated double quote");
        check_err("A='open", 1, "unterminated single quote");
        check_err("A='x' y", 1, "unexpected");
        check_err("export A", 1, "expected KEY=VALUE");
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_file_may_replace_path_but_never_a_deployment_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.env");
        std::fs::write(&path, "PATH=/opt/bin\nDEPLOYMENT_ID=forged\nTEAM=web\n").unwrap();
        let env = hook_environment(Some(&path), pairs(&[("DEPLOYMENT_ID", "d-1")])).unwrap();
        let lang = std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_string());
        assert_eq!(
            env,
            pairs(&[
                ("LANG", &lang),
                ("PATH", "/opt/bin"),
                ("TEAM", "web"),
                ("DEPLOYMENT_ID", "d-1"),
            ])
        );
        let bare = hook_environment(None, Vec::new()).unwrap();
        assert_eq!(bare, pairs(&[("PATH", HOOK_PATH), ("LANG", &lang)]));
        let missing = hook_environment(Some(&dir.path().join("nope")), Vec::new()).unwrap_err();
        assert!(format!("{missing:#}").contains("nope"), "{missing:#}");
    }

    #[test]
    fn environment_file_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.env");
        std::fs::write(&path, "A=1\n\nbroken\n").unwrap();
        let err = read_environment_file(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let missing = read_environment_file(&dir.path().join("nope")).unwrap_err();
        assert!(format!("{missing:#}").contains("nope"), "{missing:#}");
    }
}
