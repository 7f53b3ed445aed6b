//! Bundle builders for the end-to-end tests: pack a directory as tar, tar.gz or zip.
//!
//! Entries use paths relative to the packed directory, in sorted order with each directory
//! before its contents; permission bits (setuid included) and modification times are kept and
//! symlinks are stored as symlinks, never followed. These are test fixtures, not a general
//! archiver: hard links are stored as separate files, and special files are refused.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Packs `src_dir` into a tar archive at `out`, gzip-compressed when `gzip` is set.
pub fn write_tar(src_dir: &Path, out: &Path, gzip: bool) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let writer = BufWriter::new(file);
    let mut writer = if gzip {
        let encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
        pack_tar(src_dir, out, encoder)?
            .finish()
            .with_context(|| format!("writing {}", out.display()))?
    } else {
        pack_tar(src_dir, out, writer)?
    };
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))
}

fn pack_tar<W: Write>(src_dir: &Path, out: &Path, writer: W) -> anyhow::Result<W> {
    let mut builder = tar::Builder::new(writer);
    builder.follow_symlinks(false);
    for rel in walk(src_dir)? {
        let path = src_dir.join(&rel);
        check_kind(&path)?;
        builder
            .append_path_with_name(&path, &rel)
            .with_context(|| format!("adding {} to {}", path.display(), out.display()))?;
    }
    builder
        .into_inner()
        .with_context(|| format!("finishing {}", out.display()))
}

/// Packs `src_dir` into a zip archive at `out` (deflate, Unix modes and symlinks).
pub fn write_zip(src_dir: &Path, out: &Path) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    for rel in walk(src_dir)? {
        let path = src_dir.join(&rel);
        let meta = check_kind(&path)?;
        let name = rel
            .to_str()
            .with_context(|| format!("{} is not UTF-8", rel.display()))?;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .system(zip::System::Unix)
            .last_modified_time(dos_time(meta.mtime()))
            .large_file(meta.len() >= u64::from(u32::MAX));
        let added = if meta.file_type().is_symlink() {
            let target =
                fs::read_link(&path).with_context(|| format!("reading link {}", path.display()))?;
            let target = target
                .to_str()
                .with_context(|| format!("link target of {} is not UTF-8", path.display()))?
                .to_string();
            zip.add_symlink(name, target, options)
        } else if meta.is_dir() {
            let options = options.external_attributes(meta.mode() << 16);
            zip.add_directory(format!("{name}/"), options)
        } else {
            let options = options.external_attributes(meta.mode() << 16);
            zip.start_file(name, options).and_then(|()| {
                let mut src = File::open(&path)?;
                io::copy(&mut src, &mut zip)?;
                Ok(())
            })
        };
        added.with_context(|| format!("adding {} to {}", path.display(), out.display()))?;
    }
    let mut writer = zip
        .finish()
        .with_context(|| format!("finishing {}", out.display()))?;
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Paths under `root`, relative, sorted, each directory before its contents.
fn walk(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk_into(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut names = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    for name in names {
        let child = rel.join(name);
        out.push(child.clone());
        let meta = fs::symlink_metadata(root.join(&child))
            .with_context(|| format!("reading {}", root.join(&child).display()))?;
        if meta.is_dir() {
            walk_into(root, &child, out)?;
        }
    }
    Ok(())
}

fn check_kind(path: &Path) -> anyhow::Result<fs::Metadata> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
        bail!(
            "{}: only files, directories and symlinks can be packed",
            path.display()
        );
    }
    Ok(meta)
}

/// Zip's MS-DOS time (no time zone: written as UTC), clamped to what it can hold.
fn dos_time(unix_secs: i64) -> zip::DateTime {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let fields = (
        u16::try_from(year).unwrap_or(0),
        month,
        day,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
    );
    zip::DateTime::from_date_and_time(fields.0, fields.1, fields.2, fields.3, fields.4, fields.5)
        .unwrap_or_default()
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes a zip at `out` holding one deflated entry, `name`, of `mib` MiB of zeros: a zip bomb
/// with honest headers (zip64, real CRC), streamed. One MiB of zeros is compressed once with a
/// sync flush, which ends its deflate blocks on a byte boundary, and those blocks are written
/// `mib` times, then a final empty block: a valid deflate stream, so 10 GiB takes well under a
/// second and about 10 MB to build.
pub fn write_zero_zip_bomb(out: &Path, name: &str, mib: u64) -> anyhow::Result<()> {
    const MIB: usize = 1024 * 1024;
    let zeros = vec![0u8; MIB];
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let mut chunk = Vec::with_capacity(4 * 1024);
    compress
        .compress_vec(&zeros, &mut chunk, flate2::FlushCompress::Sync)
        .context("compressing a MiB of zeros")?;
    if compress.total_in() != MIB as u64 {
        bail!("the compressor took {} of {MIB} bytes", compress.total_in());
    }
    // The final, empty block with fixed Huffman codes.
    const LAST_BLOCK: [u8; 2] = [0x03, 0x00];
    let mut one = flate2::Crc::new();
    one.update(&zeros);
    let mut crc = flate2::Crc::new();
    for _ in 0..mib {
        crc.combine(&one);
    }
    let size = mib * MIB as u64;
    let compressed = chunk.len() as u64 * mib + LAST_BLOCK.len() as u64;

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::new(file);
    let zip64_extra = |w: &mut BufWriter<File>| -> io::Result<()> {
        w.write_all(&1u16.to_le_bytes())?;
        w.write_all(&16u16.to_le_bytes())?;
        w.write_all(&size.to_le_bytes())?;
        w.write_all(&compressed.to_le_bytes())
    };
    let name_len = u16::try_from(name.len()).context("entry name too long")?;
    let mut write = || -> io::Result<()> {
        // Local file header.
        w.write_all(&0x0403_4b50u32.to_le_bytes())?;
        w.write_all(&45u16.to_le_bytes())?; // version needed: zip64
        w.write_all(&0u16.to_le_bytes())?; // flags
        w.write_all(&8u16.to_le_bytes())?; // deflate
        w.write_all(&0u16.to_le_bytes())?; // time
        w.write_all(&0x5021u16.to_le_bytes())?; // date: 2020-01-01
        w.write_all(&crc.sum().to_le_bytes())?;
        w.write_all(&u32::MAX.to_le_bytes())?;
        w.write_all(&u32::MAX.to_le_bytes())?;
        w.write_all(&name_len.to_le_bytes())?;
        w.write_all(&20u16.to_le_bytes())?;
        w.write_all(name.as_bytes())?;
        zip64_extra(&mut w)?;
        for _ in 0..mib {
            w.write_all(&chunk)?;
        }
        w.write_all(&LAST_BLOCK)?;
        let central_at = 30 + u64::from(name_len) + 20 + compressed;
        // Central directory header.
        w.write_all(&0x0201_4b50u32.to_le_bytes())?;
        w.write_all(&((3u16 << 8) | 45).to_le_bytes())?; // made by: Unix
        w.write_all(&45u16.to_le_bytes())?;
        w.write_all(&0u16.to_le_bytes())?;
        w.write_all(&8u16.to_le_bytes())?;
        w.write_all(&0u16.to_le_bytes())?;
        w.write_all(&0x5021u16.to_le_bytes())?;
        w.write_all(&crc.sum().to_le_bytes())?;
        w.write_all(&u32::MAX.to_le_bytes())?;
        w.write_all(&u32::MAX.to_le_bytes())?;
        w.write_all(&name_len.to_le_bytes())?;
        w.write_all(&20u16.to_le_bytes())?; // extra
        w.write_all(&0u16.to_le_bytes())?; // comment
        w.write_all(&0u16.to_le_bytes())?; // disk
        w.write_all(&0u16.to_le_bytes())?; // internal attributes
        w.write_all(&((0o100_644u32) << 16).to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?; // local header offset
        w.write_all(name.as_bytes())?;
        zip64_extra(&mut w)?;
        let central_size = 46 + u64::from(name_len) + 20;
        let end64_at = central_at + central_size;
        // Zip64 end of central directory record and locator.
        w.write_all(&0x0606_4b50u32.to_le_bytes())?;
        w.write_all(&44u64.to_le_bytes())?;
        w.write_all(&((3u16 << 8) | 45).to_le_bytes())?;
        w.write_all(&45u16.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&1u64.to_le_bytes())?;
        w.write_all(&1u64.to_le_bytes())?;
        w.write_all(&central_size.to_le_bytes())?;
        w.write_all(&central_at.to_le_bytes())?;
        w.write_all(&0x0706_4b50u32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&end64_at.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        // End of central directory record.
        w.write_all(&0x0605_4b50u32.to_le_bytes())?;
        w.write_all(&0u16.to_le_bytes())?;
        w.write_all(&0u16.to_le_bytes())?;
        w.write_all(&1u16.to_le_bytes())?;
        w.write_all(&1u16.to_le_bytes())?;
        w.write_all(
            &u32::try_from(central_size)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        )?;
        w.write_all(&u32::try_from(central_at).unwrap_or(u32::MAX).to_le_bytes())?;
        w.write_all(&0u16.to_le_bytes())?;
        w.flush()
    };
    write().with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    /// path → (mode with type bits, contents or link target)
    type Listing = BTreeMap<String, (u32, Vec<u8>)>;

    fn make_tree(root: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(root.join("scripts"))?;
        fs::create_dir_all(root.join("empty"))?;
        fs::write(root.join("appspec.yml"), "version: 0.0\n")?;
        fs::write(root.join("scripts/start.sh"), "#!/bin/sh\n")?;
        fs::set_permissions(
            root.join("scripts/start.sh"),
            fs::Permissions::from_mode(0o4755),
        )?;
        fs::set_permissions(root.join("scripts"), fs::Permissions::from_mode(0o750))?;
        std::os::unix::fs::symlink("scripts/start.sh", root.join("start"))?;
        Ok(())
    }

    fn expected() -> Listing {
        [
            ("appspec.yml", (0o100644, b"version: 0.0\n".to_vec())),
            ("empty", (0o040755, Vec::new())),
            ("scripts", (0o040750, Vec::new())),
            ("scripts/start.sh", (0o104755, b"#!/bin/sh\n".to_vec())),
            ("start", (0o120000, b"scripts/start.sh".to_vec())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn read_tar(reader: impl Read) -> anyhow::Result<Listing> {
        let mut out = Listing::new();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.display().to_string();
            let kind = match entry.header().entry_type() {
                tar::EntryType::Directory => 0o040000,
                tar::EntryType::Symlink => 0o120000,
                tar::EntryType::Regular => 0o100000,
                other => bail!("unexpected entry type {other:?}"),
            };
            let mut data = Vec::new();
            if kind == 0o120000 {
                data = entry.link_name_bytes().unwrap_or_default().into_owned();
            } else {
                entry.read_to_end(&mut data)?;
            }
            let mode = if kind == 0o120000 {
                0
            } else {
                entry.header().mode()?
            };
            out.insert(name, (kind | mode, data));
        }
        Ok(out)
    }

    #[test]
    fn tar_and_tgz_hold_the_tree() -> anyhow::Result<()> {
        let src = tempfile::tempdir()?;
        make_tree(src.path())?;
        let out = tempfile::tempdir()?;
        let tar_path = out.path().join("b.tar");
        write_tar(src.path(), &tar_path, false)?;
        assert_eq!(read_tar(File::open(&tar_path)?)?, expected());
        let tgz_path = out.path().join("b.tgz");
        write_tar(src.path(), &tgz_path, true)?;
        let gz = flate2::read::GzDecoder::new(File::open(&tgz_path)?);
        assert_eq!(read_tar(gz)?, expected());
        Ok(())
    }

    #[test]
    fn zip_holds_the_tree() -> anyhow::Result<()> {
        let src = tempfile::tempdir()?;
        make_tree(src.path())?;
        let mtime = fs::metadata(src.path().join("appspec.yml"))?.mtime();
        let out = tempfile::tempdir()?;
        let zip_path = out.path().join("b.zip");
        write_zip(src.path(), &zip_path)?;
        let mut zip = zip::ZipArchive::new(File::open(&zip_path)?)?;
        let mut got = Listing::new();
        for i in 0..zip.len() {
            let mut file = zip.by_index(i)?;
            let name = file.name()?.trim_end_matches('/').to_string();
            let mode = file.external_attributes() >> 16;
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            let mode = if mode & 0o170000 == 0o120000 {
                0o120000
            } else {
                mode
            };
            got.insert(name, (mode, data));
            if file.name()? == "appspec.yml" {
                let dt = file.last_modified().context("no mtime")?;
                let (y, m, d) = civil_from_days(mtime.div_euclid(86_400));
                assert_eq!((i64::from(dt.year()), dt.month(), dt.day()), (y, m, d));
            }
        }
        assert_eq!(got, expected());
        Ok(())
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(18_262), (2020, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn special_files_are_refused() -> anyhow::Result<()> {
        let src = tempfile::tempdir()?;
        nix::unistd::mkfifo(&src.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU)?;
        let out = tempfile::tempdir()?;
        assert!(write_tar(src.path(), &out.path().join("b.tar"), false).is_err());
        assert!(write_zip(src.path(), &out.path().join("b.zip")).is_err());
        Ok(())
    }
}
