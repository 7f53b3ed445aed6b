//! `runas`: the user a script runs as, resolved from the password and group databases
//! before the fork, and the switch to it (setgroups, setgid, setuid, in that order) between
//! fork and exec. A user that does not exist, or another user asked of an agent that is not
//! root, fails the hook; nothing ever falls back to running as the agent's user.

use std::ffi::CString;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

/// The user a script runs as, resolved before the fork (the password and group databases
/// may need NSS modules, which are not safe to call between fork and exec).
pub(super) struct Identity {
    pub(super) name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    home: String,
    shell: String,
    /// False when the agent already is this user: then nothing is switched.
    pub(super) switch: bool,
}

impl Identity {
    /// Sets HOME, USER, LOGNAME and SHELL from the password database and, unless the agent
    /// already is this user, switches to it between fork and exec.
    pub(super) fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("SHELL", &self.shell);
        if self.switch {
            switch_user_before_exec(cmd, self.uid, self.gid, self.groups.clone());
        }
    }
}

pub(super) fn resolve_user(name: &str) -> Result<Identity, String> {
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => return Err(format!("user {name:?} does not exist")),
        Err(err) => return Err(format!("looking up user {name:?}: {err}")),
    };
    let me = nix::unistd::geteuid();
    let switch = user.uid != me;
    if switch && !me.is_root() {
        return Err(format!(
            "cannot run as user {name:?}: the agent runs as uid {me}, not root"
        ));
    }
    let groups = if switch {
        let cname = CString::new(name).map_err(|_| format!("user {name:?} is not a valid name"))?;
        nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|err| format!("reading the groups of user {name:?}: {err}"))?
    } else {
        Vec::new()
    };
    Ok(Identity {
        name: user.name.clone(),
        uid: user.uid,
        gid: user.gid,
        groups,
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
        switch,
    })
}

/// Switches the child to `uid`, `gid` and `groups` between fork and exec. All three are done
/// here, in this order: std's own `uid()`/`gid()` run before `pre_exec` closures, and after
/// `setuid` the process may no longer call `setgroups`.
#[allow(unsafe_code)]
fn switch_user_before_exec(cmd: &mut Command, uid: Uid, gid: Gid, groups: Vec<Gid>) {
    // SAFETY: the closure runs in the forked child before exec. It makes only the three
    // async-signal-safe system calls setgroups, setgid and setuid on data prepared before
    // the fork; it allocates nothing, takes no lock and calls into no NSS module.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
}
