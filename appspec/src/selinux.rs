//! The MLS/MCS `range` of a `permissions[].context`, checked as CodeDeploy checks it.
//!
//! Syntax: `sN[-sM][:CATS]` where CATS is a comma-separated list of `cN` or `cN.cM`, with
//! sensitivities ascending, categories at most `c1023`, ranges ascending and no category
//! listed twice. Examples: `s0`, `s0-s15:c0.c1023`, `s0:c1,c5.c7`. This module only checks
//! the text; the host's SELinux policy decides whether the range exists.

/// Checks a range; the message says what is wrong with it.
pub(crate) fn check_range(range: &str) -> Result<(), String> {
    let bad = |why: String| format!("invalid selinux range {range:?}: {why}");
    let (levels, categories) = match range.split_once(':') {
        Some((levels, categories)) => (levels, Some(categories)),
        None => (range, None),
    };
    let (low, high) = match levels.split_once('-') {
        Some((low, high)) => (low, Some(high)),
        None => (levels, None),
    };
    let low = number(low, 's').ok_or_else(|| bad(format!("bad sensitivity {low:?}")))?;
    if let Some(high) = high {
        let high_level =
            number(high, 's').ok_or_else(|| bad(format!("bad sensitivity {high:?}")))?;
        if high_level < low {
            return Err(bad("the high sensitivity is below the low one".to_owned()));
        }
    }
    let Some(categories) = categories else {
        return Ok(());
    };
    let mut seen = Vec::new();
    for part in categories.split(',') {
        let (first, last) = match part.split_once('.') {
            Some((first, last)) => (first, last),
            None => (part, part),
        };
        let first = category(first).ok_or_else(|| bad(format!("bad category {first:?}")))?;
        let last = category(last).ok_or_else(|| bad(format!("bad category {last:?}")))?;
        if last < first {
            return Err(bad(format!("category range {part:?} is descending")));
        }
        seen.extend(first..=last);
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("a category is listed more than once".to_owned()));
    }
    Ok(())
}

/// The number in `s12` or `c5` (prefix then one or more ASCII digits).
fn number(text: &str, prefix: char) -> Option<u64> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A category number, at most 1023.
fn category(text: &str) -> Option<u64> {
    number(text, 'c').filter(|&n| n <= 1023)
}

#[cfg(test)]
mod tests {
    use super::check_range;

    #[test]
    fn ranges() {
        let cases: &[(&str, Option<&str>)] = &[
            ("s0", None),
            ("s15", None),
            ("s0-s15", None),
            ("s0-s0", None),
            ("s0:c0", None),
            ("s0-s15:c0.c1023", None),
            ("s0:c1,c5.c7,c9", None),
            ("s0:c1023", None),
            ("", Some("bad sensitivity \"\"")),
            ("s", Some("bad sensitivity \"s\"")),
            ("0", Some("bad sensitivity \"0\"")),
            ("sx", Some("bad sensitivity \"sx\"")),
            ("s0-", Some("bad sensitivity \"\"")),
            ("-s0", Some("bad sensitivity \"\"")),
            ("s1-s0", Some("the high sensitivity is below the low one")),
            ("s0-s1-s2", Some("bad sensitivity \"s1-s2\"")),
            ("s0:", Some("bad category \"\"")),
            (":c0", Some("bad sensitivity \"\"")),
            ("s0:c1024", Some("bad category \"c1024\"")),
            ("s0:c0.c1024", Some("bad category \"c1024\"")),
            ("s0:c5.c1", Some("category range \"c5.c1\" is descending")),
            ("s0:c1,c1", Some("a category is listed more than once")),
            ("s0:c0.c5,c3", Some("a category is listed more than once")),
            ("s0:c0.c1.c2", Some("bad category \"c1.c2\"")),
            ("s0:c0,,c1", Some("bad category \"\"")),
            ("s0:x1", Some("bad category \"x1\"")),
            ("s0:c0:c1", Some("bad category \"c0:c1\"")),
        ];
        for (range, expected) in cases {
            let expected = expected.map(|why| format!("invalid selinux range {range:?}: {why}"));
            assert_eq!(check_range(range).err(), expected, "range {range:?}");
        }
    }
}
