//! Usage errors of the `hoist` CLI read as sentences about the subcommand that was run, show
//! that subcommand's usage (without the global options as if they were required) and point at
//! its help; they exit 2. No server is needed: nothing is sent.

use crate::support::hoist_with;

/// `hoist ARGS` against an address nothing listens on: its exit code and stderr.
async fn run_usage(args: &[&str]) -> (i32, String) {
    let out = hoist_with("http://127.0.0.1:9", Some("t"), args).await;
    assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    (out.code, out.stderr)
}

#[tokio::test]
async fn usage_errors_name_the_subcommand_and_what_is_wrong() {
    for (args, first, usage) in [
        (
            &["group", "list"][..],
            "hoist: error: `hoist group list` needs --app <APP>",
            "Usage: hoist group list [OPTIONS] --app <APP>",
        ),
        (
            &["deploy", "create", "--app", "shop"][..],
            "hoist: error: `hoist deploy create` needs --group <GROUP> and one of --revision, --s3, --url, --git or --previous",
            "Usage: hoist deploy create [OPTIONS] --app <APP> --group <GROUP> <--revision <REVISION>|--s3 <s3://BUCKET/KEY>|--url <URL>|--git <GIT>|--previous>",
        ),
        (
            &["hosts", "lst"][..],
            "hoist: error: `hoist hosts` has no subcommand 'lst'; did you mean 'list'?",
            "Usage: hoist hosts [OPTIONS] <COMMAND>",
        ),
        (
            &["hosts", "list", "--jsn"][..],
            "hoist: error: `hoist hosts list` has no option '--jsn'; did you mean '--json'?",
            "Usage: hoist hosts list [OPTIONS]",
        ),
        (
            &["token", "create", "--expires", "soon"][..],
            "hoist: error: 'soon' is not a valid value for --expires <EXPIRES>: expected a duration such as 90s, 10m, 12h or 7d",
            "Usage: hoist token create [OPTIONS]",
        ),
        (
            &["deploy", "status"][..],
            "hoist: error: `hoist deploy status` needs <ID>",
            "Usage: hoist deploy status [OPTIONS] <ID>",
        ),
    ] {
        let (code, stderr) = run_usage(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.first(), Some(&first), "{args:?}: {stderr}");
        assert_eq!(lines.get(2), Some(&usage), "{args:?}: {stderr}");
        // The usage line is the subcommand's own: the global options, given here through
        // HOIST_SERVER and HOIST_TOKEN, are not listed as if they were required.
        assert!(!lines[2].contains("--server") && !lines[2].contains("--token"), "{stderr}");
        // Help is offered for the subcommand that was run.
        let path = usage
            .trim_start_matches("Usage: ")
            .split(' ')
            .take_while(|w| !w.starts_with(['-', '<', '[']))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            lines.last(),
            Some(&format!("For more information, try '{path} --help'.").as_str()),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn help_is_still_clap_s_own_and_exits_0() {
    let out = hoist_with(
        "http://127.0.0.1:9",
        Some("t"),
        &["group", "list", "--help"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Usage: hoist group list"),
        "{}",
        out.stdout
    );
}
