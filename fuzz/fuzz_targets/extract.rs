//! Fuzz target: `hoist_agent::bundle::extract::extract` on any bytes, as zip, tar or tar.gz.
//!
//! Each input is the archive file itself; `common/check.rs` extracts it beside an empty
//! `outside/` and checks that nothing lands outside `dest/` (the same oracle as
//! `extract_structured`, which reaches deeper archive semantics by building valid archives).
//! Tar header checksums are recomputed before extraction (see `with_tar_checksums`), so the
//! checksum test itself is left to the tar crate's own tests.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    check::extract_and_check(&with_tar_checksums(data));
});

/// The input with the checksum of every tar header recomputed, when it starts like a tar
/// (`ustar` magic in its first block): a mutated header then still reaches the extractor
/// instead of stopping at the tar reader's checksum test. Other inputs pass unchanged.
fn with_tar_checksums(data: &[u8]) -> Vec<u8> {
    let mut data = data.to_vec();
    if data.len() < 512 || &data[257..262] != b"ustar" {
        return data;
    }
    let mut offset = 0;
    while offset + 512 <= data.len() {
        let header = &mut data[offset..offset + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(|c| c == ' ' || c == '\0'), 8).ok());
        let Some(size) = size.filter(|s| *s < 1 << 30) else {
            break;
        };
        offset += 512 + (size as usize).div_ceil(512) * 512;
    }
    data
}
