//! A pipeline file (YAML) read strictly: every problem is listed with its key path, as
//! `hoist-agent validate` lists an appspec's (an unknown key, a missing or mistyped value, a
//! bad variable name, a bad source, a duplicate group). Whether each stage's group exists
//! is asked of the caller (`known_group`), so the whole file is judged in one pass.
//!
//! Deliberately not here: storing the pipeline or anything about releases.

use std::collections::BTreeMap;

use hoist_protocol::operator::PipelineSource;
use serde_yaml::Value;

use crate::store::PipelineStageRow;

/// Longest pipeline file accepted, in bytes.
pub const MAX_FILE_LEN: usize = 32 * 1024;
/// Most stages a pipeline may have.
pub const MAX_STAGES: usize = 32;
/// Shortest and longest wait between two looks at a source.
pub const POLL_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// A source's wait between looks when the file gives none.
pub const DEFAULT_POLL_SECS: u64 = 60;

/// A pipeline file that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub application: String,
    pub source: Option<PipelineSource>,
    pub stages: Vec<PipelineStageRow>,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// Walks one mapping: takes known keys, reports unknown ones.
struct Map<'a> {
    path: String,
    entries: Vec<(String, &'a Value)>,
}

impl<'a> Map<'a> {
    fn new(path: &str, v: &'a Value, problems: &mut Vec<String>) -> Option<Map<'a>> {
        let Value::Mapping(m) = v else {
            let at = if path.is_empty() { "the file" } else { path };
            problems.push(format!("{at}: must be a mapping, found {}", shown(v)));
            return None;
        };
        let mut entries = Vec::new();
        for (k, v) in m {
            match k {
                Value::String(k) => entries.push((k.clone(), v)),
                other => problems.push(format!("{path}: key {} is not a string", shown(other))),
            }
        }
        Some(Map {
            path: path.to_owned(),
            entries,
        })
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_owned()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn take(&mut self, k: &str) -> Option<&'a Value> {
        let i = self.entries.iter().position(|(key, _)| key == k)?;
        Some(self.entries.remove(i).1)
    }

    fn string(&mut self, k: &str, required: bool, problems: &mut Vec<String>) -> Option<String> {
        match self.take(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(format!(
                    "{}: must be a string, found {}",
                    self.key(k),
                    shown(other)
                ));
                None
            }
            None if required => {
                problems.push(format!("{}: missing", self.key(k)));
                None
            }
            None => None,
        }
    }

    fn finish(self, problems: &mut Vec<String>) {
        for (k, _) in &self.entries {
            problems.push(format!("{}: unknown key", self.key(k)));
        }
    }
}

/// Parses and checks a pipeline file; `known_group(application, group)` says whether the
/// application has that deployment group (false for an unknown application).
pub fn parse(
    text: &str,
    known_application: impl Fn(&str) -> bool,
    known_group: impl Fn(&str, &str) -> bool,
) -> Result<Spec, Vec<String>> {
    if text.len() > MAX_FILE_LEN {
        return Err(vec![format!(
            "the file has {} bytes; at most {MAX_FILE_LEN} are accepted",
            text.len()
        )]);
    }
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("not valid YAML: {e}")]),
    };
    let mut problems = Vec::new();
    let Some(mut top) = Map::new("", &doc, &mut problems) else {
        return Err(problems);
    };
    let name = top.string("pipeline", true, &mut problems);
    if let Some(n) = name.as_deref().filter(|n| !name_ok(n)) {
        problems.push(format!(
            "pipeline: {n:?} must be 1 to 100 letters, digits, '.', '_' or '-'"
        ));
    }
    let application = top.string("application", true, &mut problems);
    let app_known = match application.as_deref() {
        Some(a) if known_application(a) => true,
        Some(a) => {
            problems.push(format!("application: no application named {a:?}"));
            false
        }
        None => false,
    };
    let source = top.take("source").and_then(|v| source(v, &mut problems));
    let mut stages = Vec::new();
    match top.take("stages") {
        None => problems.push("stages: missing".into()),
        Some(Value::Sequence(seq)) => {
            if seq.is_empty() {
                problems.push("stages: a pipeline needs at least one stage".into());
            }
            if seq.len() > MAX_STAGES {
                problems.push(format!(
                    "stages: {} stages; at most {MAX_STAGES} are allowed",
                    seq.len()
                ));
            }
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for (n, v) in seq.iter().enumerate() {
                let Some(st) = stage(n, v, &mut problems) else {
                    continue;
                };
                if let Some(first) = seen.get(&st.group) {
                    problems.push(format!(
                        "stages[{n}].group: duplicate group {:?} (also stages[{first}])",
                        st.group
                    ));
                } else {
                    seen.insert(st.group.clone(), n);
                    if let (true, Some(app)) = (app_known, application.as_deref()) {
                        if !known_group(app, &st.group) {
                            problems.push(format!(
                                "stages[{n}].group: no deployment group {:?} in application {app:?}",
                                st.group
                            ));
                        }
                    }
                }
                stages.push(st);
            }
        }
        Some(other) => problems.push(format!("stages: must be a list, found {}", shown(other))),
    }
    top.finish(&mut problems);
    match (name, application) {
        (Some(name), Some(application)) if problems.is_empty() => Ok(Spec {
            name,
            application,
            source,
            stages,
        }),
        _ => Err(problems),
    }
}

fn stage(n: usize, v: &Value, problems: &mut Vec<String>) -> Option<PipelineStageRow> {
    let path = format!("stages[{n}]");
    let mut m = Map::new(&path, v, problems)?;
    let group = m.string("group", true, problems);
    if let Some(g) = group.as_deref().filter(|g| !name_ok(g)) {
        problems.push(format!(
            "{path}.group: {g:?} is not a deployment group name"
        ));
    }
    let manual_approval = match m.string("approval", false, problems).as_deref() {
        None => false,
        Some("manual") => true,
        Some(other) => {
            problems.push(format!(
                "{path}.approval: {other:?} is not an approval (the one kind is \"manual\")"
            ));
            false
        }
    };
    let mut variables = BTreeMap::new();
    if let Some(v) = m.take("variables") {
        let vpath = format!("{path}.variables");
        if let Some(vars) = Map::new(&vpath, v, problems) {
            for (k, val) in vars.entries {
                let value = match val {
                    Value::String(s) => s.clone(),
                    Value::Number(x) => x.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        problems.push(format!(
                            "{vpath}.{k}: must be a string, a number or a boolean, found {}",
                            shown(other)
                        ));
                        continue;
                    }
                };
                variables.insert(k, value);
            }
            for p in hoist_protocol::variables::problems(&variables) {
                problems.push(format!("{vpath}: {p}"));
            }
        }
    }
    m.finish(problems);
    Some(PipelineStageRow {
        group: group?,
        manual_approval,
        variables,
    })
}

fn poll_secs(m: &mut Map<'_>, problems: &mut Vec<String>) -> u64 {
    match m.take("poll_secs") {
        None => DEFAULT_POLL_SECS,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| POLL_SECS.contains(&s)) => {
            n.as_u64().unwrap_or(DEFAULT_POLL_SECS)
        }
        Some(other) => {
            problems.push(format!(
                "{}: must be a whole number of seconds from {} to {}, found {}",
                m.key("poll_secs"),
                POLL_SECS.start(),
                POLL_SECS.end(),
                shown(other)
            ));
            DEFAULT_POLL_SECS
        }
    }
}

fn source(v: &Value, problems: &mut Vec<String>) -> Option<PipelineSource> {
    let mut m = Map::new("source", v, problems)?;
    let git = m.take("git");
    let s3 = m.take("s3");
    m.finish(problems);
    match (git, s3) {
        (Some(_), Some(_)) => {
            problems.push("source: give one of git or s3, not both".into());
            None
        }
        (None, None) => {
            problems.push("source: give git or s3".into());
            None
        }
        (Some(g), None) => {
            let mut m = Map::new("source.git", g, problems)?;
            let url = m.string("url", true, problems);
            let branch = m.string("branch", true, problems);
            let poll_secs = poll_secs(&mut m, problems);
            m.finish(problems);
            if let Some(u) = url.as_deref() {
                if let Some(p) = git_url_problem(u) {
                    problems.push(format!("source.git.url: {u:?} {p}"));
                }
            }
            if let Some(b) = branch.as_deref() {
                if !branch_ok(b) {
                    problems.push(format!("source.git.branch: {b:?} is not a branch name"));
                }
            }
            Some(PipelineSource::Git {
                url: url?,
                branch: branch?,
                poll_secs,
            })
        }
        (None, Some(s)) => {
            let mut m = Map::new("source.s3", s, problems)?;
            let bucket = m.string("bucket", true, problems);
            let key = m.string("key", true, problems);
            let poll_secs = poll_secs(&mut m, problems);
            m.finish(problems);
            if let Some(b) = bucket.as_deref() {
                let ok = (3..=63).contains(&b.len())
                    && b.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b".-".contains(&c)
                    });
                if !ok {
                    problems.push(format!("source.s3.bucket: {b:?} is not a bucket name"));
                }
            }
            if let Some(k) = key.as_deref() {
                if k.is_empty() || k.len() > 1024 || k.chars().any(char::is_control) {
                    problems.push(format!("source.s3.key: {k:?} is not an object key"));
                }
            }
            Some(PipelineSource::S3 {
                bucket: bucket?,
                key: key?,
                poll_secs,
            })
        }
    }
}

/// What is wrong with a Git source URL, if anything: one of the schemes `git ls-remote`
/// is run with here, no user info (credentials go in the agent's and the coordinator's
/// Git config, never in a pipeline file), no options smuggled in as a leading `-`.
fn git_url_problem(u: &str) -> Option<&'static str> {
    let Ok(parsed) = url::Url::parse(u) else {
        return Some("is not a URL");
    };
    if !["https", "http", "git", "ssh", "file"].contains(&parsed.scheme()) {
        return Some("must be an https, http, git, ssh or file URL");
    }
    if !parsed.password().unwrap_or("").is_empty() {
        return Some("must not carry a password");
    }
    if u.len() > 2048 || u.chars().any(char::is_control) {
        return Some("is too long or holds control characters");
    }
    None
}

/// A branch name `git check-ref-format --branch` would take, roughly: no leading `-`,
/// no `..`, no space or control characters, none of `~^:?*[\`.
fn branch_ok(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 255
        && !b.starts_with('-')
        && !b.starts_with('/')
        && !b.ends_with('/')
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("@{")
        && !b
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_here(text: &str) -> Result<Spec, Vec<String>> {
        parse(
            text,
            |a| a == "shop",
            |a, g| a == "shop" && ["staging", "production"].contains(&g),
        )
    }

    fn check_err(text: &str, expected: &[&str]) {
        let got = parse_here(text).expect_err("must be refused");
        assert_eq!(got, expected, "input:\n{text}");
    }

    #[test]
    fn the_issues_example_parses() {
        let spec = parse_here(
            "pipeline: shop-release\napplication: shop\nsource:\n  git: { url: \"https://git.example.internal/shop.git\", branch: main, poll_secs: 30 }\nstages:\n  - group: staging\n    variables: { DEPLOY_MODE: destructive }\n  - group: production\n    approval: manual\n    variables: { DEPLOY_MODE: normal, REPLICAS: 3 }\n",
        )
        .expect("valid");
        assert_eq!(spec.name, "shop-release");
        assert_eq!(
            spec.source,
            Some(PipelineSource::Git {
                url: "https://git.example.internal/shop.git".into(),
                branch: "main".into(),
                poll_secs: 30
            })
        );
        assert_eq!(spec.stages.len(), 2);
        assert!(!spec.stages[0].manual_approval && spec.stages[1].manual_approval);
        assert_eq!(spec.stages[1].variables["REPLICAS"], "3");
        let s3 = parse_here(
            "pipeline: p\napplication: shop\nsource:\n  s3: { bucket: artifacts, key: shop/latest.tgz }\nstages:\n  - group: staging\n",
        )
        .expect("valid");
        assert_eq!(
            s3.source,
            Some(PipelineSource::S3 {
                bucket: "artifacts".into(),
                key: "shop/latest.tgz".into(),
                poll_secs: DEFAULT_POLL_SECS
            })
        );
    }

    #[test]
    fn the_example_pipeline_file_is_valid() {
        let text = include_str!("../../../../examples/pipelines/shop-release.yml");
        let spec = parse_here(text).expect("the example is valid");
        assert_eq!(spec.stages.len(), 2);
        assert!(spec.stages[1].manual_approval);
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        check_err(
            "pipeline: p\napplication: shop\ncolour: blue\nstages:\n  - group: staging\n    approvl: manual\n    variables: { lower: x, PATH: /tmp }\n  - group: qa\n  - group: staging\n",
            &[
                "stages[0].variables: \"PATH\": is a reserved hook variable",
                "stages[0].variables: \"lower\": a variable name must match [A-Z_][A-Z0-9_]*",
                "stages[0].approvl: unknown key",
                "stages[1].group: no deployment group \"qa\" in application \"shop\"",
                "stages[2].group: duplicate group \"staging\" (also stages[0])",
                "colour: unknown key",
            ],
        );
        check_err(
            "pipeline: p\napplication: shop\nsource:\n  git: { url: \"ftp://x/y\", branch: \"a b\", poll_secs: 0, depth: 1 }\nstages:\n  - group: staging\n    approval: auto\n",
            &[
                "source.git.poll_secs: must be a whole number of seconds from 1 to 86400, found 0",
                "source.git.depth: unknown key",
                "source.git.url: \"ftp://x/y\" must be an https, http, git, ssh or file URL",
                "source.git.branch: \"a b\" is not a branch name",
                "stages[0].approval: \"auto\" is not an approval (the one kind is \"manual\")",
            ],
        );
        check_err(
            "application: nope\nsource: { git: {url: \"https://h/r\", branch: main}, s3: {bucket: b, key: k} }\nstages: []\n",
            &[
                "pipeline: missing",
                "application: no application named \"nope\"",
                "source: give one of git or s3, not both",
                "stages: a pipeline needs at least one stage",
            ],
        );
        check_err(
            "pipeline: p\napplication: shop\nsource: { s3: { bucket: \"Bad_Bucket\" } }\nstages:\n  - {}\n",
            &[
                "source.s3.key: missing",
                "source.s3.bucket: \"Bad_Bucket\" is not a bucket name",
                "stages[0].group: missing",
            ],
        );
        check_err("- a\n", &["the file: must be a mapping, found a list"]);
        assert!(parse_here("pipeline: [").expect_err("bad YAML")[0].starts_with("not valid YAML"));
    }
}
