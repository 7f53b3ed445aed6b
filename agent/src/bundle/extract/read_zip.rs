//! Reading zip entries into the [`Extractor`], after refusing from the central directory
//! alone what could not fit (declared sizes, ratios, free space); zip's modes and times.

use super::*;

pub(super) fn extract_zip(out: &mut Extractor<'_>, file: File) -> Result<(), ExtractError> {
    let mut zip =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ExtractError::Corrupt {
            path: out.archive.clone(),
            reason: e.to_string(),
        })?;
    // The central directory is already in memory: refuse a huge one before writing anything.
    if zip.len() as u64 > out.limits.max_entries {
        return Err(ExtractError::LimitExceeded {
            what: format!("number of entries ({})", zip.len()),
            limit: out.limits.max_entries,
        });
    }
    check_zip_declared(out, &mut zip)?;
    for index in 0..zip.len() {
        let listed_name = match zip.name_for_index(index) {
            Some(Ok(name)) => name.into_owned(),
            _ => format!("#{index}"),
        };
        let mut entry = zip
            .by_index(index)
            .map_err(|e| out.corrupt(&listed_name, e))?;
        let raw_name = entry.name_raw().to_vec();
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&raw_name).into_owned());
        // Zip names may be CP437 or UTF-8: the decoded name is the file name to create.
        let path_bytes = name.as_bytes().to_vec();
        out.count_entry()?;
        if entry.encrypted() {
            return Err(unsafe_entry(
                &name,
                "encrypted entries are not supported".to_string(),
            ));
        }
        let unix_mode = zip_unix_mode(&entry);
        let is_dir_name = name.ends_with('/');
        let file_type = unix_mode.map_or(0, |m| m & S_IFMT);
        let (is_dir, is_link) = match file_type {
            0 => (is_dir_name, false),
            S_IFDIR => (true, false),
            S_IFREG => (is_dir_name, false),
            S_IFLNK => (false, true),
            S_IFCHR | S_IFBLK => return Err(unsafe_entry(&name, "device file".to_string())),
            S_IFIFO => return Err(unsafe_entry(&name, "FIFO".to_string())),
            S_IFSOCK => return Err(unsafe_entry(&name, "socket".to_string())),
            other => {
                return Err(unsafe_entry(&name, format!("unknown file type {other:o}")));
            }
        };
        let default_mode = if is_dir { 0o755 } else { 0o644 };
        let meta = Meta {
            mode: unix_mode.map_or(default_mode, |m| m & 0o7777),
            mtime: zip_mtime(&entry),
            owner: None,
        };
        let kind = if is_dir {
            Kind::Dir
        } else if is_link {
            let mut target = Vec::new();
            (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut target)
                .map_err(|e| out.corrupt(&name, e))?;
            if target.len() as u64 > MAX_LINK_TARGET {
                return Err(unsafe_entry(&name, "symlink target too long".to_string()));
            }
            Kind::Symlink(target)
        } else {
            Kind::File
        };
        out.entry(&name, &path_bytes, kind, meta, &mut entry, None)?;
    }
    Ok(())
}

/// Refuses a zip from its central directory alone, before anything is written: declared
/// sizes summing past the cap, an entry with an implausible compression ratio, or a total that
/// does not fit the destination's free space. The cap on bytes actually written still holds
/// for a zip whose declared sizes lie.
pub(super) fn check_zip_declared<R: Read + io::Seek>(
    out: &Extractor<'_>,
    zip: &mut zip::ZipArchive<R>,
) -> Result<(), ExtractError> {
    let mut total: u64 = 0;
    let mut implausible = None;
    for index in 0..zip.len() {
        let listed_name = match zip.name_for_index(index) {
            Some(Ok(name)) => name.into_owned(),
            _ => format!("#{index}"),
        };
        let entry = zip
            .by_index_raw(index)
            .map_err(|e| out.corrupt(&listed_name, e))?;
        let (size, compressed) = (entry.size(), entry.compressed_size());
        let ratio_too_high =
            size > RATIO_CHECK_MIN_BYTES && size / compressed.max(1) > MAX_COMPRESSION_RATIO;
        if ratio_too_high && implausible.is_none() {
            implausible = Some(ExtractError::ImplausibleRatio {
                entry: listed_name,
                size,
                compressed,
            });
        }
        total = total.saturating_add(size);
    }
    if total > out.limits.max_total_bytes {
        return Err(ExtractError::LimitExceeded {
            what: format!("total unpacked bytes (the zip declares {total})"),
            limit: out.limits.max_total_bytes,
        });
    }
    if let Some(error) = implausible {
        return Err(error);
    }
    out.check_space(total)
}

/// The Unix mode from a zip entry's external attributes, with its special bits intact (the
/// zip crate's own accessor drops them), or `None` when the archiver recorded none.
pub(super) fn zip_unix_mode<R: Read + ?Sized>(entry: &zip::read::ZipFile<'_, R>) -> Option<u32> {
    let high = entry.external_attributes() >> 16;
    match entry.system() {
        zip::System::Dos => None,
        _ if high == 0 => None,
        _ => Some(high),
    }
}

pub(super) fn zip_mtime<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> Option<SystemTime> {
    for field in entry.extra_data_fields() {
        if let zip::ExtraField::ExtendedTimestamp(ts) = field {
            if let Some(secs) = ts.mod_time() {
                return unix_time(u64::from(secs));
            }
        }
    }
    let dt = entry.last_modified()?;
    if !dt.is_valid() {
        return None;
    }
    let days = days_from_civil(i64::from(dt.year()), dt.month().into(), dt.day().into());
    let secs = days * 86_400
        + i64::from(dt.hour()) * 3600
        + i64::from(dt.minute()) * 60
        + i64::from(dt.second());
    u64::try_from(secs).ok().and_then(unix_time)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
