//! Shell completions and man pages of both CLIs, generated from their clap definitions by a
//! hidden `generate` subcommand (`hoist generate completions bash`, `hoist-agent generate man
//! DIR`), which `packaging/build.sh` runs to put them in the .deb and .rpm.
//!
//! What is generated only: where the files are installed is the packages' business.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use clap_complete::Shell;

/// `generate ...`: hidden from `--help`, for packaging.
#[derive(Debug, Clone, Subcommand)]
pub enum Generate {
    /// Print the completion script for SHELL (bash, zsh, fish, elvish or powershell).
    Completions { shell: Shell },
    /// Write man pages (section 1) into DIR: one for the command and one per subcommand.
    Man { dir: PathBuf },
}

/// Does what `what` asks for the command `cmd`, writing completions to `out`; says what it
/// wrote on failure.
pub fn generate(
    mut cmd: clap::Command,
    what: &Generate,
    out: &mut dyn Write,
) -> Result<(), String> {
    match what {
        Generate::Completions { shell } => {
            let name = cmd.get_name().to_owned();
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, name.clone(), &mut script);
            if *shell == Shell::Bash {
                script = bash_fix(&name, script);
            }
            match out.write_all(&script).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(format!("writing the {shell} completions: {e}"))
                }
                _ => Ok(()),
            }
        }
        Generate::Man { dir } => man_pages(cmd, dir),
    }
}

/// clap_complete's bash script for a name with a `-` (`hoist-agent`) tracks the subcommand
/// as `hoist__agent__subcmd__deploy` but labels its cases `hoist__subcmd__agent__subcmd__deploy`,
/// so no subcommand's options complete; this relabels the cases as the tracking names them.
fn bash_fix(name: &str, script: Vec<u8>) -> Vec<u8> {
    if !name.contains('-') {
        return script;
    }
    let broken = format!("{}__", name.replace('-', "__subcmd__"));
    let tracked = format!("{}__", name.replace('-', "__"));
    String::from_utf8_lossy(&script)
        .replace(&broken, &tracked)
        .into_bytes()
}

fn man_pages(cmd: clap::Command, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating the man page directory {}: {e}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .map_err(|e| format!("writing man pages into {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        Command::new("tool")
            .version("1.2.3")
            .about("A tool")
            .subcommand(
                Command::new("group")
                    .about("Groups")
                    .subcommand(Command::new("list").arg(Arg::new("app").long("app"))),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn completions_know_the_subcommands_and_options() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            generate(cli(), &Generate::Completions { shell }, &mut out).expect("generate");
            let text = String::from_utf8(out).expect("utf-8");
            assert!(
                text.contains("group") && text.contains("app"),
                "{shell}: {text}"
            );
        }
    }

    #[test]
    fn man_pages_cover_each_visible_subcommand() {
        let dir = std::env::temp_dir().join(format!("hoist-man-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        generate(cli(), &Generate::Man { dir: dir.clone() }, &mut Vec::new()).expect("man");
        let mut pages: Vec<String> = std::fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        assert_eq!(pages, ["tool-group-list.1", "tool-group.1", "tool.1"]);
        let top = std::fs::read_to_string(dir.join("tool.1")).expect("tool.1");
        assert!(
            top.contains(".TH tool 1") && top.contains("A tool"),
            "{top}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
