//! `hoist generate`: the completions and man pages the packages install, from the real
//! binary; hidden from `hoist --help`.

use crate::support::{hoist_with, Scratch};

#[tokio::test]
async fn hoist_generates_completions_and_a_man_page_per_subcommand_and_hides_the_command() {
    let bash = hoist_with(
        "http://127.0.0.1:9",
        None,
        &["generate", "completions", "bash"],
    )
    .await;
    assert!(bash.ok().starts_with("_hoist()"), "{}", bash.stdout);
    for word in ["group", "deploy", "--revision", "--wait"] {
        assert!(bash.stdout.contains(word), "bash completion lacks {word}");
    }
    for shell in ["zsh", "fish"] {
        let out = hoist_with(
            "http://127.0.0.1:9",
            None,
            &["generate", "completions", shell],
        )
        .await;
        assert!(out.ok().contains("deploy"), "{shell}: {}", out.stdout);
    }
    let tmp = Scratch::new();
    let dir = tmp.path().join("man");
    let man = hoist_with(
        "http://127.0.0.1:9",
        None,
        &["generate", "man", dir.to_str().unwrap()],
    )
    .await;
    man.ok();
    let top = std::fs::read_to_string(dir.join("hoist.1")).expect("hoist.1");
    assert!(top.starts_with(".ie"), "{top}");
    assert!(top.contains(".TH hoist 1") && top.contains("Hoist coordinator and operator CLI"));
    let create = std::fs::read_to_string(dir.join("hoist-deploy-create.1")).expect("page");
    assert!(create.contains("\\-\\-wait"), "{create}");
    assert!(
        !dir.join("hoist-generate.1").exists(),
        "the hidden command has no page"
    );
    let help = hoist_with("http://127.0.0.1:9", None, &["--help"]).await;
    assert!(!help.ok().contains("generate "), "{}", help.stdout);
}
