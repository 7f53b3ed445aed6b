//! Fuzz target: `hoist_agent::bundle::extract::extract` on well-formed archives whose entries
//! are derived from the input.
//!
//! Raw bytes rarely survive the archive readers far enough to reach what the extractor
//! decides: which names, link targets and entry orders it accepts. Here the input is decoded
//! (with `arbitrary`) into a format (tar, tar.gz or zip) and a list of entries — files,
//! directories, symlinks and hard links, with modes, sizes and duplicates — whose paths and link
//! targets are built from a small alphabet of components (`a`, `b`, `.`, `..`, empty, a long
//! name, and the names beside `dest/`: `bundle`, `outside`, `dest`), relative or absolute. The
//! entries are written as real archive bytes with the tar, flate2 and zip crates the agent reads
//! them with, header fields set directly so that no name is normalised or refused on the way,
//! and the archive goes through the same oracle as the raw-byte `extract` target
//! (`common/check.rs`): nothing may land outside `dest/`.
//!
//! It deliberately does not produce corrupt archives (that is the `extract` target's job), and
//! zip archives carry no hard links (the format has none) nor duplicate names (the zip crate
//! refuses to write them).

#![no_main]

use std::collections::HashSet;
use std::io::{Cursor, Write};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../common/check.rs"]
mod check;

/// Entries beyond this many are dropped: an escape takes a few entries, and small archives
/// keep each run fast.
const MAX_ENTRIES: usize = 12;
/// Components beyond this many in one path are dropped.
const MAX_PARTS: usize = 8;
/// A component long enough that a path holding it needs a GNU long-name record (over 100
/// bytes), yet within a file name's 255.
const LONG_NAME_LEN: usize = 120;

#[derive(Arbitrary, Debug)]
struct Input {
    format: Format,
    entries: Vec<Entry>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Format {
    Tar,
    TarGz,
    Zip,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    path: ArchivePath,
    kind: Kind,
    mode: Mode,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Size),
    Dir,
    Symlink(ArchivePath),
    HardLink(ArchivePath),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Empty,
    Small,
    Block,
    Large,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Mode {
    Default,
    Executable,
    ReadOnly,
    NoAccess,
    Setuid,
    Sticky,
    Raw(u16),
}

/// A path as an archive spells it: components joined by `/`, optionally with a leading `/`
/// (absolute) and a trailing one.
#[derive(Arbitrary, Debug)]
struct ArchivePath {
    absolute: bool,
    parts: Vec<Part>,
    trailing_slash: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Part {
    A,
    B,
    Dot,
    DotDot,
    Empty,
    Long,
    Bundle,
    Outside,
    Dest,
}

impl Part {
    fn text(self) -> String {
        match self {
            Part::A => "a".into(),
            Part::B => "b".into(),
            Part::Dot => ".".into(),
            Part::DotDot => "..".into(),
            Part::Empty => String::new(),
            Part::Long => "l".repeat(LONG_NAME_LEN),
            Part::Bundle => "bundle".into(),
            Part::Outside => "outside".into(),
            Part::Dest => "dest".into(),
        }
    }
}

impl ArchivePath {
    fn render(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .take(MAX_PARTS)
            .map(|p| p.text())
            .collect();
        let mut path = parts.join("/");
        if self.absolute {
            path.insert(0, '/');
        }
        if self.trailing_slash {
            path.push('/');
        }
        path
    }
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::Empty => 0,
            Size::Small => 5,
            Size::Block => 512,
            Size::Large => 70_000,
        }
    }
}

impl Mode {
    fn bits(self, kind: &Kind) -> u32 {
        match self {
            Mode::Default if matches!(kind, Kind::Dir) => 0o755,
            Mode::Default => 0o644,
            Mode::Executable => 0o755,
            Mode::ReadOnly if matches!(kind, Kind::Dir) => 0o555,
            Mode::ReadOnly => 0o444,
            Mode::NoAccess => 0,
            Mode::Setuid => 0o4755,
            Mode::Sticky => 0o1777,
            Mode::Raw(bits) => u32::from(bits) & 0o7777,
        }
    }
}

fuzz_target!(|input: Input| {
    let entries = &input.entries[..input.entries.len().min(MAX_ENTRIES)];
    let bytes = match input.format {
        Format::Tar => tar_bytes(entries).ok(),
        Format::TarGz => tar_bytes(entries).and_then(|tar| gzip(&tar)).ok(),
        Format::Zip => zip_bytes(entries).ok(),
    };
    // An archive the writers refuse to build is no test of the extractor.
    if let Some(bytes) = bytes {
        check::extract_and_check(&bytes);
    }
});

/// The entries as a GNU tar, names and link targets written verbatim (a GNU long-name or
/// long-link record first when one does not fit its 100-byte field).
fn tar_bytes(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let name = entry.path.render();
        let (entry_type, link, size) = match &entry.kind {
            Kind::File(size) => (tar::EntryType::Regular, String::new(), size.bytes()),
            Kind::Dir => (tar::EntryType::Directory, String::new(), 0),
            Kind::Symlink(target) => (tar::EntryType::Symlink, target.render(), 0),
            Kind::HardLink(target) => (tar::EntryType::Link, target.render(), 0),
        };
        if name.len() > 100 {
            long_record(&mut builder, tar::EntryType::GNULongName, &name)?;
        }
        if link.len() > 100 {
            long_record(&mut builder, tar::EntryType::GNULongLink, &link)?;
        }
        let mut header = tar::Header::new_gnu();
        copy_field(&mut header.as_old_mut().name, &name);
        copy_field(&mut header.as_old_mut().linkname, &link);
        header.set_entry_type(entry_type);
        header.set_mode(entry.mode.bits(&entry.kind));
        header.set_size(size as u64);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        builder.append(&header, contents(size).as_slice())?;
    }
    builder.into_inner()
}

/// A GNU `././@LongLink` record carrying a name or link target longer than its field.
fn long_record(
    builder: &mut tar::Builder<Vec<u8>>,
    entry_type: tar::EntryType,
    text: &str,
) -> std::io::Result<()> {
    let mut data = text.as_bytes().to_vec();
    data.push(0);
    let mut header = tar::Header::new_gnu();
    copy_field(&mut header.as_old_mut().name, "././@LongLink");
    header.set_entry_type(entry_type);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

/// Copies as much of `text` as fits into a NUL-padded header field.
fn copy_field(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

fn contents(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"hoist\n"[i % 6]).collect()
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

/// The entries as a zip with Unix modes: symlinks as `S_IFLNK` entries whose contents are the
/// target (how the extractor recognises them); hard links and repeated names are left out.
fn zip_bytes(entries: &[Entry]) -> zip::result::ZipResult<Vec<u8>> {
    use zip::write::SimpleFileOptions;

    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut names = HashSet::new();
    for entry in entries {
        let mut name = entry.path.render();
        if matches!(entry.kind, Kind::Dir) && !name.ends_with('/') {
            // What `add_directory` stores, so that the duplicate test sees the real name.
            name.push('/');
        }
        if matches!(entry.kind, Kind::HardLink(_)) || !names.insert(name.clone()) {
            continue;
        }
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(entry.mode.bits(&entry.kind));
        match &entry.kind {
            Kind::File(size) => {
                writer.start_file(name, options)?;
                writer.write_all(&contents(size.bytes()))?;
            }
            Kind::Dir => writer.add_directory(name, options)?,
            Kind::Symlink(target) => writer.add_symlink(name, target.render(), options)?,
            Kind::HardLink(_) => {}
        }
    }
    Ok(writer.finish()?.into_inner())
}
