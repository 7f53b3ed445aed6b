//! Telling zip, tar and tar.gz apart from their first bytes, never from the file name.

use super::*;

/// Detects the archive format from its first bytes.
pub fn detect_format(path: &Path) -> Result<ArchiveFormat, ExtractError> {
    let io_err = |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let head = read_up_to(&mut file, BLOCK).map_err(io_err)?;
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(ArchiveFormat::Zip);
    }
    if head.starts_with(b"\x1f\x8b") {
        let file = File::open(path).map_err(io_err)?;
        let mut gz = flate2::read::GzDecoder::new(BufReader::new(file));
        let inner = read_up_to(&mut gz, BLOCK).map_err(|e| ExtractError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("gzip stream: {e}"),
        })?;
        return if is_tar_header(&inner) {
            Ok(ArchiveFormat::TarGz)
        } else {
            Err(ExtractError::GzipNotTar {
                path: path.to_path_buf(),
            })
        };
    }
    if is_tar_header(&head) {
        return Ok(ArchiveFormat::Tar);
    }
    Err(ExtractError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Reads until `limit` bytes or end of stream, whichever comes first.
pub(super) fn read_up_to(reader: &mut dyn Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit);
    reader.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A POSIX/GNU header (`ustar` magic at 257), or an old v7 header whose checksum holds.
pub(super) fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < BLOCK {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    if block[0] == 0 {
        return false;
    }
    let Some(stored) = parse_octal(&block[148..156]) else {
        return false;
    };
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    stored == computed
}

pub(super) fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}
