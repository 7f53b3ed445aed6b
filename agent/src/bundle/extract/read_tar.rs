//! Reading tar and tar.gz entries into the [`Extractor`], which checks and writes each one.

use super::*;

pub(super) fn extract_tar(out: &mut Extractor<'_>, reader: impl Read) -> Result<(), ExtractError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| out.corrupt("(start)", e))?;
    let mut previous = String::from("(start)");
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Corrupt {
            path: out.archive.clone(),
            reason: format!("after entry {previous:?}: {e}"),
        })?;
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        previous.clone_from(&name);
        out.count_entry()?;
        let header = entry.header().clone();
        let entry_type = header.entry_type();
        let mode = header.mode().map_err(|e| out.corrupt(&name, e))?;
        let mtime = header.mtime().ok().and_then(unix_time);
        let owner = match (header.uid(), header.gid()) {
            (Ok(uid), Ok(gid)) => u32::try_from(uid).ok().zip(u32::try_from(gid).ok()),
            _ => None,
        };
        let meta = Meta { mode, mtime, owner };
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .ok_or_else(|| unsafe_entry(&name, "link without a target".to_string()));
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous if raw_name.ends_with(b"/") => {
                Kind::Dir
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(link?),
            tar::EntryType::Link => Kind::HardLink(link?),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(unsafe_entry(&name, "device file".to_string()));
            }
            tar::EntryType::Fifo => return Err(unsafe_entry(&name, "FIFO".to_string())),
            tar::EntryType::GNUSparse => {
                return Err(unsafe_entry(
                    &name,
                    "sparse files are not supported".to_string(),
                ));
            }
            // Archive-wide metadata, such as the commit id `git archive` records.
            tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(unsafe_entry(
                    &name,
                    format!("unsupported entry type {:?}", other.as_byte() as char),
                ));
            }
        };
        let expected = matches!(kind, Kind::File).then(|| entry.size());
        if let Some(size) = expected {
            // The header's size, refused before the first byte of the entry is written.
            let total = out.summary.bytes.saturating_add(size);
            if total > out.limits.max_total_bytes {
                return Err(ExtractError::LimitExceeded {
                    what: format!("total unpacked bytes (entry {name:?} declares {size})"),
                    limit: out.limits.max_total_bytes,
                });
            }
            out.check_space(size)?;
        }
        out.entry(&name, &raw_name, kind, meta, &mut entry, expected)?;
    }
    Ok(())
}
