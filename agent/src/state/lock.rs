//! The host lock (`agent.lock`): an flock that keeps one agent daemon or local deployment per
//! state directory, with the holder's pid written in the file so a refusal can name it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use super::StateDir;

/// The host lock: at most one agent daemon or local deployment per state directory.
/// Released when dropped (or when the process dies: it is an flock).
#[derive(Debug)]
pub struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Takes the lock or says which process holds it. `role` (e.g. "hoist-agent run") is
    /// written beside the pid so the refusal can name the holder.
    pub fn acquire(state: &StateDir, role: &str) -> anyhow::Result<HostLock> {
        let path = state.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, errno)) => {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    let holder = if holder.is_empty() {
                        "another process".to_string()
                    } else {
                        holder.to_string()
                    };
                    anyhow::bail!(
                        "another hoist-agent holds the lock on {} ({holder}); only one agent or deployment may run per host",
                        state.root().display()
                    );
                }
                return Err(std::io::Error::from(errno))
                    .with_context(|| format!("locking {}", path.display()));
            }
        };
        // The pid line only names the holder to others; the flock is the lock. A full state
        // directory must not keep the agent from starting and saying what is wrong.
        let line = format!("pid {} ({role})\n", std::process::id());
        if let Err(e) = lock
            .set_len(0)
            .and_then(|()| lock.write_all(line.as_bytes()))
        {
            tracing::warn!("writing the holder's pid to {}: {e}", path.display());
        }
        Ok(HostLock { _lock: lock })
    }

    /// The pid written in the lock file, when a live process holds the lock.
    pub fn holder(state: &StateDir) -> Option<u32> {
        let path = state.lock_path();
        let file = File::open(&path).ok()?;
        // Probing with a shared non-blocking lock: if it succeeds nobody holds the lock.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_unlocked) => None,
            Err((_, _)) => {
                let text = fs::read_to_string(&path).ok()?;
                text.split_whitespace().nth(1)?.parse().ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
        let _first = HostLock::acquire(&state, "test holder").expect("first lock");
        let err = HostLock::acquire(&state, "second").expect_err("second must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("test holder"), "{msg}");
        assert_eq!(HostLock::holder(&state), Some(std::process::id()));
    }
}
