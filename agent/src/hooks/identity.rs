//! Which process leads a hook's process group, told apart across agent restarts and reboots:
//! the boot id and the leader's start time, recorded with the group so that recovery signals
//! it only while it is still the same process. Reading `/proc` only; it signals nothing.

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name, so field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_whatever_the_command_name_holds() {
        let rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
        for comm in ["sleep", "a b", "x) (y", "((", "))", ") 99 ("] {
            let line = format!("1234 ({comm}) {rest}");
            assert_eq!(parse_start_time(&line), Some(424_242), "{line}");
        }
        assert_eq!(parse_start_time("1234 (sleep"), None);
        assert_eq!(parse_start_time("1234 (sleep) S 1 2"), None);
        assert_eq!(parse_start_time(""), None);
    }
}
