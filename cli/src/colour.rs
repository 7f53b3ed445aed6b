//! Whether log lines get ANSI colour, decided the same way by both binaries.
//!
//! Deliberately not here: setting up the log subscriber (each binary's `main`/`cli`).

/// Whether log lines get ANSI colour: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>). A file, a pipe or the journal's
/// stream gets plain text.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// [`use_colour`] for this process's stderr and environment.
pub fn stderr_colour() -> bool {
    use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        for (terminal, no_color, expected) in [
            (true, None, true),
            (true, Some(""), true),
            (true, Some("1"), false),
            (false, None, false),
            (false, Some("1"), false),
        ] {
            assert_eq!(
                use_colour(terminal, no_color.map(Into::into)),
                expected,
                "terminal={terminal} NO_COLOR={no_color:?}"
            );
        }
    }
}
