//! How both CLIs (`hoist`, `hoist-agent`) word a command-line usage error: one sentence that
//! names the subcommand and what is wrong (`` `hoist group list` needs --app <APP> ``), then
//! clap's usage line of that subcommand and where its help is (`hoist group list --help`).
//!
//! Only the words: clap still parses, finds the error and builds the usage line; help and
//! version requests are left to clap.

use std::error::Error as _;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The text to print on stderr for `err`, which parsing `args` (the whole command line, the
/// program first) with `cmd` gave, the first line starting with `prefix` (such as
/// `hoist: error:`); or `None` when `err` is a help or version request that clap prints and
/// exits with itself (`err.exit()`).
pub fn render(
    err: &clap::Error,
    mut cmd: clap::Command,
    args: impl IntoIterator<Item = OsString>,
    prefix: &str,
) -> Option<String> {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    cmd.build();
    let (path, mut sub) = subcommand(&cmd, args);
    // The subcommand's own usage line, not the one in clap's error: that one lists every
    // argument given, options taken from the environment (HOIST_SERVER, HOIST_TOKEN) too, as
    // if they were required.
    let usage = sub.render_usage().to_string();
    let mut out = format!("{prefix} {}", sentence(err, &path));
    if !usage.trim().is_empty() {
        out.push_str(&format!("\n\n{}", usage.trim_end()));
    }
    out.push_str(&format!("\n\nFor more information, try '{path} --help'."));
    out.push('\n');
    Some(out)
}

/// The subcommand `args` named (`hoist group list`) and its definition: each word that names
/// a subcommand of the one before it.
fn subcommand(
    cmd: &clap::Command,
    args: impl IntoIterator<Item = OsString>,
) -> (String, clap::Command) {
    let mut path = vec![cmd.get_name().to_owned()];
    let mut current = cmd;
    for arg in args.into_iter().skip(1) {
        if let Some(sub) = current.find_subcommand(&arg) {
            path.push(sub.get_name().to_owned());
            current = sub;
        }
    }
    (path.join(" "), current.clone())
}

/// The sentence saying what is wrong, about the subcommand `path` (`hoist group list`).
fn sentence(err: &clap::Error, path: &str) -> String {
    let one = |kind| strings(err, kind).into_iter().next().unwrap_or_default();
    let who = format!("`{path}`");
    let suggestion = |kind| {
        let s = strings(err, kind);
        if s.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", or_list(&quoted(&s)))
        }
    };
    match err.kind() {
        ErrorKind::MissingRequiredArgument => {
            let missing: Vec<String> = strings(err, ContextKind::InvalidArg)
                .iter()
                .map(|a| one_of(a))
                .collect();
            format!("{who} needs {}", and_list(&missing))
        }
        ErrorKind::MissingSubcommand => format!(
            "{who} needs a subcommand: {}",
            strings(err, ContextKind::ValidSubcommand).join(", ")
        ),
        ErrorKind::InvalidSubcommand => format!(
            "{who} has no subcommand '{}'{}",
            one(ContextKind::InvalidSubcommand),
            suggestion(ContextKind::SuggestedSubcommand)
        ),
        ErrorKind::UnknownArgument => {
            let arg = one(ContextKind::InvalidArg);
            if arg.starts_with('-') {
                format!(
                    "{who} has no option '{arg}'{}",
                    suggestion(ContextKind::SuggestedArg)
                )
            } else {
                format!("{who} takes no argument '{arg}'")
            }
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let arg = one(ContextKind::InvalidArg);
            let value = one(ContextKind::InvalidValue);
            let valid = strings(err, ContextKind::ValidValue);
            let why = match err.source() {
                Some(source) => format!(": {source}"),
                None if !valid.is_empty() => format!(": it is one of {}", or_list(&valid)),
                None => String::new(),
            };
            if value.is_empty() {
                format!("{arg} needs a value{why}")
            } else {
                format!("'{value}' is not a valid value for {arg}{why}")
            }
        }
        ErrorKind::ArgumentConflict => {
            let prior = strings(err, ContextKind::PriorArg);
            let arg = one(ContextKind::InvalidArg);
            if prior.is_empty() || prior.contains(&arg) {
                format!("{arg} may be given only once")
            } else {
                format!("{arg} cannot be used with {}", or_list(&prior))
            }
        }
        ErrorKind::TooManyValues => format!(
            "{} takes no more values, so '{}' is one too many",
            one(ContextKind::InvalidArg),
            one(ContextKind::InvalidValue)
        ),
        _ => {
            // Other kinds are rare; clap's own words, as one line, without its "error: ".
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("").trim();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    }
}

/// A required group as clap shows it (`<--revision <REVISION>|--url <URL>>`) as words
/// (`one of --revision or --url`); anything else as it is.
fn one_of(arg: &str) -> String {
    let Some(inner) = arg
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .filter(|a| a.contains('|'))
    else {
        return arg.to_owned();
    };
    let names: Vec<String> = inner
        .split('|')
        .filter_map(|alt| alt.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    format!("one of {}", or_list(&names))
}

fn strings(err: &clap::Error, kind: ContextKind) -> Vec<String> {
    match err.get(kind) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        Some(ContextValue::StyledStr(s)) => vec![s.to_string()],
        Some(ContextValue::StyledStrs(v)) => v.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

fn quoted(items: &[String]) -> Vec<String> {
    items.iter().map(|s| format!("'{s}'")).collect()
}

fn joined(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

fn and_list(items: &[String]) -> String {
    joined(items, "and")
}

fn or_list(items: &[String]) -> String {
    joined(items, "or")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cli() -> Command {
        Command::new("tool")
            .subcommand(
                Command::new("get")
                    .arg(Arg::new("url").long("url"))
                    .arg(Arg::new("path").long("path"))
                    .group(
                        clap::ArgGroup::new("source")
                            .args(["url", "path"])
                            .required(true),
                    ),
            )
            .arg(Arg::new("server").long("server").global(true))
            .subcommand(
                Command::new("group").subcommand(
                    Command::new("list")
                        .arg(Arg::new("app").long("app").required(true))
                        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
                        .arg(
                            Arg::new("format")
                                .long("format")
                                .value_parser(["table", "plain"]),
                        ),
                ),
            )
    }

    fn check(args: &[&str], expected: &str) {
        let err = cli().try_get_matches_from(args).expect_err("a usage error");
        let args = args.iter().map(OsString::from);
        assert_eq!(
            render(&err, cli(), args, "tool: error:").as_deref(),
            Some(expected)
        );
    }

    #[test]
    fn usage_errors_are_sentences_about_the_subcommand() {
        check(
            &["tool", "group", "list"],
            "tool: error: `tool group list` needs --app <app>\n\nUsage: tool group list [OPTIONS] --app <app>\n\nFor more information, try 'tool group list --help'.\n",
        );
        check(
            &["tool", "group", "list", "--app", "a", "--jsn"],
            "tool: error: `tool group list` has no option '--jsn'; did you mean '--json'?\n\nUsage: tool group list [OPTIONS] --app <app>\n\nFor more information, try 'tool group list --help'.\n",
        );
        check(
            &["tool", "get"],
            "tool: error: `tool get` needs one of --url or --path\n\nUsage: tool get [OPTIONS] <--url <url>|--path <path>>\n\nFor more information, try 'tool get --help'.\n",
        );
        check(
            &["tool", "grop"],
            "tool: error: `tool` has no subcommand 'grop'; did you mean 'group'?\n\nUsage: tool [OPTIONS] [COMMAND]\n\nFor more information, try 'tool --help'.\n",
        );
        check(
            &["tool", "group", "list", "--app", "a", "--format", "xml"],
            "tool: error: 'xml' is not a valid value for --format <format>: it is one of table or plain\n\nUsage: tool group list [OPTIONS] --app <app>\n\nFor more information, try 'tool group list --help'.\n",
        );
        check(
            &["tool", "group", "list", "--app", "a", "extra"],
            "tool: error: `tool group list` takes no argument 'extra'\n\nUsage: tool group list [OPTIONS] --app <app>\n\nFor more information, try 'tool group list --help'.\n",
        );
    }

    #[test]
    fn help_and_version_are_left_to_clap() {
        let err = cli()
            .try_get_matches_from(["tool", "--help"])
            .expect_err("help");
        assert_eq!(render(&err, cli(), [OsString::from("tool")], "tool:"), None);
    }
}
