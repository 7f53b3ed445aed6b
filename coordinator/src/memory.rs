//! How `hoist server` asks glibc's allocator to keep its memory: at most [`ARENAS`] malloc
//! arenas, set before the runtime starts any thread.
//!
//! glibc gives threads up to eight arenas per core, and the server's blocking pool (up to
//! 512 threads when thousands of polls arrive at once) spreads what each host keeps (its
//! cached credentials, its waker) over all of them, each with its own free space: measured
//! with 5 000 held polls, that was several KiB of RSS per host. glibc's per-thread caches
//! keep small allocations off the arena locks, so a few arenas cost little speed. An
//! operator's own `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES=glibc.malloc.arena_max=N` wins.
//! Not here: any other allocator tuning, or other C libraries (where this does nothing).

/// Arenas for the whole process: one per runtime worker on the two-core machines the
/// figures come from, and enough for the blocking pool's short calls.
pub const ARENAS: i32 = 2;

/// The arena limit to set, given the environment's `MALLOC_ARENA_MAX` and
/// `GLIBC_TUNABLES`: `None` when the operator set one.
pub fn arena_limit(malloc_arena_max: Option<&str>, glibc_tunables: Option<&str>) -> Option<i32> {
    let set_by_operator = malloc_arena_max.is_some_and(|v| !v.trim().is_empty())
        || glibc_tunables.is_some_and(|t| t.contains("glibc.malloc.arena_max"));
    (!set_by_operator).then_some(ARENAS)
}

/// Applies [`arena_limit`] from this process's environment. Call it first in `main`, before
/// any thread exists.
pub fn limit_arenas() {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(n) = arena_limit(
        env("MALLOC_ARENA_MAX").as_deref(),
        env("GLIBC_TUNABLES").as_deref(),
    ) {
        set_arena_max(n);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) {
    // SAFETY: mallopt takes two integers and only changes the allocator's parameters under
    // its own lock; M_ARENA_MAX with a positive value is a documented parameter.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_s_own_arena_setting_wins() {
        assert_eq!(arena_limit(None, None), Some(ARENAS));
        assert_eq!(
            arena_limit(Some(""), Some("glibc.malloc.tcache_count=0")),
            Some(ARENAS)
        );
        assert_eq!(arena_limit(Some("8"), None), None);
        assert_eq!(arena_limit(None, Some("glibc.malloc.arena_max=4")), None);
    }
}
