//! One entry of a `permissions[].acls` list: checked with CodeDeploy's rules and rewritten in
//! the canonical form `setfacl -m` accepts.
//!
//! Accepted: `[d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:perms`, where perms is a
//! single octal digit or any of `r`, `w`, `x`, `-` (possibly none). As in CodeDeploy, an
//! entry with no type means a user (`bob:rw`), and the base entries of a file (`u::rwx`,
//! `g::r-x`, `o::r`) are rejected: those are what `mode` sets. Default entries (`d:…`) may be
//! base entries. This module does not decide whether an entry fits the object it is applied
//! to (a default entry on a plain file is an install-time error).

/// Checks one ACL entry and returns it as `[default:]user|group|mask|other:name:rwx`, with
/// `-` for each permission not granted.
pub(crate) fn canonical_entry(entry: &str) -> Result<String, String> {
    let parts: Vec<&str> = entry.split(':').collect();
    let shape = || {
        format!(
            "invalid acl entry {entry:?}: expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions"
        )
    };
    // Split off the optional `default` marker and the optional type, leaving name and perms.
    let (default, kind, name, perms) = match parts.as_slice() {
        [name, perms] => (false, None, *name, *perms),
        [first, name, perms] if is_default(first) => (true, None, *name, *perms),
        [kind, name, perms] => (false, Some(kind_of(kind).ok_or_else(shape)?), *name, *perms),
        [d, kind, name, perms] if is_default(d) => {
            (true, Some(kind_of(kind).ok_or_else(shape)?), *name, *perms)
        }
        _ => return Err(shape()),
    };
    // Without a type, `m` and `o` name the mask and other entries; anything else is a user.
    let (kind, name) = match kind {
        Some(kind) => (kind, name),
        None => match kind_of(name) {
            Some(k @ (Kind::Mask | Kind::Other)) => (k, ""),
            _ => (Kind::User, name),
        },
    };
    if matches!(kind, Kind::Mask | Kind::Other) && !name.is_empty() {
        return Err(format!(
            "invalid acl entry {entry:?}: {} entries take no name",
            kind.as_str()
        ));
    }
    if !default && kind != Kind::Mask && name.is_empty() {
        return Err(format!(
            "acl entry {entry:?} is a base entry; set it with mode instead"
        ));
    }
    let (read, write, execute) = permissions(perms).map_err(|c| {
        format!("acl entry {entry:?} has an invalid permission character {c:?} (allowed: r, w, x, -, or one octal digit)")
    })?;
    Ok(format!(
        "{}{}:{}:{}{}{}",
        if default { "default:" } else { "" },
        kind.as_str(),
        name,
        if read { 'r' } else { '-' },
        if write { 'w' } else { '-' },
        if execute { 'x' } else { '-' },
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Group,
    Mask,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Mask => "mask",
            Kind::Other => "other",
        }
    }
}

fn is_default(s: &str) -> bool {
    s == "d" || s == "default"
}

fn kind_of(s: &str) -> Option<Kind> {
    match s {
        "u" | "user" => Some(Kind::User),
        "g" | "group" => Some(Kind::Group),
        "m" | "mask" => Some(Kind::Mask),
        "o" | "other" => Some(Kind::Other),
        _ => None,
    }
}

/// Read, write, execute from `rwx`-style letters or one octal digit; the bad character if any.
fn permissions(perms: &str) -> Result<(bool, bool, bool), char> {
    let mut chars = perms.chars();
    if let (Some(c @ '0'..='7'), None) = (chars.next(), chars.next()) {
        let bits = c as u32 - '0' as u32;
        return Ok((bits & 4 != 0, bits & 2 != 0, bits & 1 != 0));
    }
    let (mut read, mut write, mut execute) = (false, false, false);
    for c in perms.chars() {
        match c {
            'r' => read = true,
            'w' => write = true,
            'x' => execute = true,
            '-' => {}
            other => return Err(other),
        }
    }
    Ok((read, write, execute))
}

#[cfg(test)]
mod tests {
    use super::canonical_entry;

    #[test]
    fn acl_entries() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            // Named entries, every spelling of the type.
            ("u:bob:rwx", Ok("user:bob:rwx")),
            ("user:bob:r-x", Ok("user:bob:r-x")),
            ("g:web:rw", Ok("group:web:rw-")),
            ("group:web:6", Ok("group:web:rw-")),
            ("bob:rw", Ok("user:bob:rw-")),
            ("u:bob:", Ok("user:bob:---")),
            ("u:bob:0", Ok("user:bob:---")),
            ("u:bob:7", Ok("user:bob:rwx")),
            ("u:bob:xwr", Ok("user:bob:rwx")),
            // The mask, with or without a type.
            ("m::rw", Ok("mask::rw-")),
            ("mask::r", Ok("mask::r--")),
            ("m:rw", Ok("mask::rw-")),
            // Default entries, base ones included.
            ("d:u:bob:rw", Ok("default:user:bob:rw-")),
            ("default:group:web:rx", Ok("default:group:web:r-x")),
            ("d:u::rwx", Ok("default:user::rwx")),
            ("d:g::r-x", Ok("default:group::r-x")),
            ("d:o::r", Ok("default:other::r--")),
            ("d:m::rwx", Ok("default:mask::rwx")),
            ("d:bob:rw", Ok("default:user:bob:rw-")),
            ("d:o:r", Ok("default:other::r--")),
            ("d::rw", Ok("default:user::rw-")),
            // Base entries belong to mode.
            ("u::rwx", Err("acl entry \"u::rwx\" is a base entry; set it with mode instead")),
            ("g::r-x", Err("acl entry \"g::r-x\" is a base entry; set it with mode instead")),
            ("o::r", Err("acl entry \"o::r\" is a base entry; set it with mode instead")),
            ("o:r", Err("acl entry \"o:r\" is a base entry; set it with mode instead")),
            (":rw", Err("acl entry \":rw\" is a base entry; set it with mode instead")),
            // Names where none is allowed.
            ("o:bob:r", Err("invalid acl entry \"o:bob:r\": other entries take no name")),
            ("m:bob:r", Err("invalid acl entry \"m:bob:r\": mask entries take no name")),
            // Bad shapes.
            ("rwx", Err("invalid acl entry \"rwx\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            ("", Err("invalid acl entry \"\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            ("d:u:bob:rw:x", Err("invalid acl entry \"d:u:bob:rw:x\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            ("x:u:bob:rw", Err("invalid acl entry \"x:u:bob:rw\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            ("d:d:bob:rw", Err("invalid acl entry \"d:d:bob:rw\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            ("q:bob:rw", Err("invalid acl entry \"q:bob:rw\": expected [d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]:][name]:permissions")),
            // Bad permissions.
            ("u:bob:rwX", Err("acl entry \"u:bob:rwX\" has an invalid permission character 'X' (allowed: r, w, x, -, or one octal digit)")),
            ("u:bob:8", Err("acl entry \"u:bob:8\" has an invalid permission character '8' (allowed: r, w, x, -, or one octal digit)")),
            ("u:bob:77", Err("acl entry \"u:bob:77\" has an invalid permission character '7' (allowed: r, w, x, -, or one octal digit)")),
        ];
        for (entry, expected) in cases {
            let got = canonical_entry(entry);
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "acl entry {entry:?}");
        }
    }
}
