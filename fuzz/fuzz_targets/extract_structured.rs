//! Fuzz target: `hoist_agent::bundle::extract::extract` on well-formed archives whose entries
//! are derived from the input.
//!
//! Raw bytes rarely survive the archive readers far enough to reach what the extractor
//! decides: which names, link targets and entry orders it accepts. Here the input is decoded
//! (with `arbitrary`) into a format (tar, tar.gz or zip) and a list of entries — files,
//! directories, symlinks and hard links, with modes, sizes and duplicates — whose names and link
//! targets are built from a small alphabet of components (`a`, `b`, a long name, and the names
//! beside `dest/`: `bundle`, `outside`, `dest`), often under or pointing at an earlier entry.
//! Names now and then get a twist (absolute, `..`, `.`, an empty component, a trailing `/`);
//! link targets climb with up to four leading `..` (or start with `/` or `./`) and may end in
//! runs of `..` (`a/b/../../..`). Choices take one input byte each, so that the short inputs
//! libFuzzer starts with already hold several entries. The entries are written as real archive bytes with the tar, flate2 and zip crates the agent reads
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

use arbitrary::{Arbitrary, Unstructured};
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

/// Field-less enums whose `Arbitrary` takes one input byte. (The derive reads four bytes per
/// choice; libFuzzer grows inputs slowly, so shorter encodings reach longer archives sooner.)
macro_rules! one_byte_enum {
    ($(#[$doc:meta])* enum $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        enum $name {
            $($variant),+
        }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl<'a> Arbitrary<'a> for $name {
            fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(*u.choose(Self::ALL)?)
            }

            fn size_hint(_depth: usize) -> (usize, Option<usize>) {
                (1, Some(1))
            }
        }
    };
}

one_byte_enum! {
    enum Format { Tar, TarGz, Zip }
}

one_byte_enum! {
    enum Size { Empty, Small, Block, Large }
}

one_byte_enum! {
    /// A component an honest archive could hold.
    enum Plain { A, B, Long, Bundle, Outside, Dest }
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: Name,
    kind: Kind,
    mode: Mode,
}

#[derive(Debug)]
enum Kind {
    File(Size),
    Dir,
    Symlink(Target),
    HardLink(Target),
}

impl<'a> Arbitrary<'a> for Kind {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=3u8)? {
            0 => Kind::File(u.arbitrary()?),
            1 => Kind::Dir,
            2 => Kind::Symlink(u.arbitrary()?),
            _ => Kind::HardLink(u.arbitrary()?),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Default,
    Executable,
    ReadOnly,
    NoAccess,
    Setuid,
    Sticky,
    Raw(u16),
}

impl<'a> Arbitrary<'a> for Mode {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=6u8)? {
            0 => Mode::Default,
            1 => Mode::Executable,
            2 => Mode::ReadOnly,
            3 => Mode::NoAccess,
            4 => Mode::Setuid,
            5 => Mode::Sticky,
            _ => Mode::Raw(u.arbitrary()?),
        })
    }
}

/// An entry name: plain components, possibly under an earlier entry's name, now and then with
/// one twist (see [`Name::render`]). The extractor refuses a twisted name and stops, so twists
/// are rare enough that most archives get several entries deep.
#[derive(Arbitrary, Debug)]
struct Name {
    under: Earlier,
    first: Plain,
    rest: Vec<Plain>,
    twist: u8,
}

/// A symlink's or hard link's target: 0 to 4 leading `..` (or `/`, `./`, a trailing `/`),
/// possibly an earlier entry's name, plain names, then runs of any components at all, `..`
/// included (`a/b/../../..`).
#[derive(Arbitrary, Debug)]
struct Target {
    lead: u8,
    under: Earlier,
    names: Vec<Plain>,
    tail: Vec<Run>,
}

/// No earlier entry (0), or the name of one of the entries before (an index into them, modulo
/// their count plus one): entries inside earlier directories or links, links to earlier
/// entries, the shapes where one entry's effect changes what the next one does.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Earlier(u8);

impl Earlier {
    fn components(self, earlier: &[Vec<String>]) -> &[String] {
        match usize::from(self.0) % (earlier.len() + 1) {
            0 => &[],
            i => &earlier[i - 1],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Plain(Plain),
    Dot,
    DotDot,
    Empty,
}

/// One to four of the same component (one input byte): a deep climb is one choice, not
/// several that each look like no progress to the fuzzer.
#[derive(Debug, Clone, Copy)]
struct Run {
    part: Part,
    times: usize,
}

impl<'a> Arbitrary<'a> for Run {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let plain = Plain::ALL.len();
        let parts = plain + 3;
        let choice = u.choose_index(parts * 4)?;
        let part = match choice % parts {
            i if i < plain => Part::Plain(Plain::ALL[i]),
            i if i == plain => Part::Dot,
            i if i == plain + 1 => Part::DotDot,
            _ => Part::Empty,
        };
        Ok(Run {
            part,
            times: choice / parts + 1,
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

impl Plain {
    fn text(self) -> String {
        match self {
            Plain::A => "a".into(),
            Plain::B => "b".into(),
            Plain::Long => "l".repeat(LONG_NAME_LEN),
            Plain::Bundle => "bundle".into(),
            Plain::Outside => "outside".into(),
            Plain::Dest => "dest".into(),
        }
    }
}

impl Part {
    fn text(self) -> String {
        match self {
            Part::Plain(plain) => plain.text(),
            Part::Dot => ".".into(),
            Part::DotDot => "..".into(),
            Part::Empty => String::new(),
        }
    }
}

impl Name {
    /// The components joined by `/`. A `twist` of 224 or more (one in eight) makes it
    /// absolute, adds a trailing `/`, inserts `..`, `.` or an empty component before one of
    /// the components, or replaces the whole name with `..`, `.` or nothing.
    /// Also returns the plain components (before any twist), for later entries to build on.
    fn render(&self, earlier: &[Vec<String>]) -> (String, Vec<String>) {
        let plain: Vec<String> = self
            .under
            .components(earlier)
            .iter()
            .cloned()
            .chain(
                std::iter::once(&self.first)
                    .chain(&self.rest)
                    .map(|p| p.text()),
            )
            .take(MAX_PARTS)
            .collect();
        let name = Self::twisted(plain.clone(), self.twist);
        (name, plain)
    }

    fn twisted(mut parts: Vec<String>, twist: u8) -> String {
        let Some(twist) = twist.checked_sub(224) else {
            return parts.join("/");
        };
        let at = usize::from(twist / 8) % parts.len();
        match twist % 8 {
            0 => return format!("/{}", parts.join("/")),
            1 => return format!("{}/", parts.join("/")),
            2 => parts.insert(at, "..".into()),
            3 => parts.insert(at, ".".into()),
            4 => parts.insert(at, String::new()),
            5 => return "..".into(),
            6 => return ".".into(),
            _ => return String::new(),
        }
        parts.join("/")
    }
}

impl Target {
    fn render(&self, earlier: &[Vec<String>]) -> String {
        let (prefix, ups, suffix) = match self.lead % 8 {
            ups @ 0..=4 => ("", usize::from(ups), ""),
            5 => ("/", 0, ""),
            6 => ("./", 0, ""),
            _ => ("", 0, "/"),
        };
        let parts: Vec<String> = std::iter::repeat_n("..".to_string(), ups)
            .chain(self.under.components(earlier).iter().cloned())
            .chain(self.names.iter().map(|p| p.text()))
            .chain(
                self.tail
                    .iter()
                    .flat_map(|run| std::iter::repeat_n(run.part.text(), run.times)),
            )
            .take(MAX_PARTS)
            .collect();
        format!("{prefix}{}{suffix}", parts.join("/"))
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
    if entries.is_empty() {
        return;
    }
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

/// Each entry's name and link target (empty for files and directories) as written.
fn render(entries: &[Entry]) -> Vec<(String, String)> {
    let mut earlier = Vec::with_capacity(entries.len());
    let mut rendered = Vec::with_capacity(entries.len());
    for entry in entries {
        let (name, plain) = entry.name.render(&earlier);
        let link = match &entry.kind {
            Kind::Symlink(target) | Kind::HardLink(target) => target.render(&earlier),
            Kind::File(_) | Kind::Dir => String::new(),
        };
        earlier.push(plain);
        rendered.push((name, link));
    }
    rendered
}

/// The entries as a GNU tar, names and link targets written verbatim (a GNU long-name or
/// long-link record first when one does not fit its 100-byte field).
fn tar_bytes(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (entry, (name, link)) in entries.iter().zip(render(entries)) {
        let (entry_type, size) = match &entry.kind {
            Kind::File(size) => (tar::EntryType::Regular, size.bytes()),
            Kind::Dir => (tar::EntryType::Directory, 0),
            Kind::Symlink(_) => (tar::EntryType::Symlink, 0),
            Kind::HardLink(_) => (tar::EntryType::Link, 0),
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
    for (entry, (mut name, link)) in entries.iter().zip(render(entries)) {
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
            Kind::Symlink(_) => writer.add_symlink(name, link, options)?,
            Kind::HardLink(_) => {}
        }
    }
    Ok(writer.finish()?.into_inner())
}
