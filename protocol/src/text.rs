//! Showing text that crossed the wire: what a host reported, what a bundle's scripts printed.
//! Such text may carry terminal escape sequences, a forged newline or a bidirectional
//! override; [`esc`] makes every one of them visible before it reaches a terminal. Pure: it
//! prints nothing itself.

/// `s` with every control character (and the bidirectional overrides) written as a
/// visible escape, `\x1b` or `\u{202e}`: safe to print on an operator's terminal.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            match u32::from(c) {
                n @ 0..=0xff => out.push_str(&format!("\\x{n:02x}")),
                n => out.push_str(&format!("\\u{{{n:x}}}")),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_makes_control_characters_visible() {
        assert_eq!(esc("plain é text"), "plain é text");
        assert_eq!(esc("a\u{1b}[31mb"), "a\\x1b[31mb");
        assert_eq!(esc("x\ny\r\t"), "x\\x0ay\\x0d\\x09");
        assert_eq!(esc("\u{9b}2J"), "\\x9b2J");
        assert_eq!(esc("\u{202e}txt"), "\\u{202e}txt");
    }
}
