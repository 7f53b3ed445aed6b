//! Extraction tests: a corpus of hostile archives built here (raw tar headers where the `tar`
//! crate's builder would refuse, zips through the zip writer), each checked to be refused with
//! the entry named and nothing written outside the target; plus round trips of one tree
//! through zip, tar and tar.gz.

use super::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use zip::write::SimpleFileOptions;

// ---------------------------------------------------------------------------------------------
// Builders

/// Writes tar streams header by header, so entries the `tar` crate's builder refuses to write
/// (absolute paths, `..`, devices, lying sizes) can be made.
#[derive(Default)]
struct RawTar {
    bytes: Vec<u8>,
}

struct RawEntry<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
    /// The size written in the header; `None` means the data's length.
    claimed_size: Option<u64>,
    uid: u32,
    gid: u32,
    mtime: u64,
    /// Write an old v7 header (no `ustar` magic).
    v7: bool,
}

impl Default for RawEntry<'_> {
    fn default() -> Self {
        RawEntry {
            name: "",
            kind: b'0',
            link: "",
            data: b"",
            mode: 0o644,
            claimed_size: None,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            v7: false,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

impl RawTar {
    fn raw(&mut self, e: RawEntry<'_>) -> &mut Self {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(e.name.as_bytes());
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], u64::from(e.uid));
        octal(&mut h[116..124], u64::from(e.gid));
        octal(
            &mut h[124..136],
            e.claimed_size.unwrap_or(e.data.len() as u64),
        );
        octal(&mut h[136..148], e.mtime);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
        if !e.v7 {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(RawEntry {
            name,
            data,
            ..RawEntry::default()
        })
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(RawEntry {
            name,
            kind: b'5',
            mode: 0o755,
            ..RawEntry::default()
        })
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(RawEntry {
            name,
            kind: b'2',
            link: target,
            mode: 0o777,
            ..RawEntry::default()
        })
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(RawEntry {
            name,
            kind: b'1',
            link: target,
            ..RawEntry::default()
        })
    }

    fn special(&mut self, name: &str, kind: u8) -> &mut Self {
        self.raw(RawEntry {
            name,
            kind,
            ..RawEntry::default()
        })
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// Builds zips through the zip writer; `mode` includes the file type bits.
struct RawZip {
    writer: zip::ZipWriter<std::io::Cursor<Vec<u8>>>,
}

impl RawZip {
    fn new() -> Self {
        RawZip {
            writer: zip::ZipWriter::new(std::io::Cursor::new(Vec::new())),
        }
    }

    fn options(mode: Option<u32>) -> SimpleFileOptions {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(
                zip::DateTime::from_date_and_time(2020, 1, 2, 3, 4, 6).expect("valid date"),
            );
        match mode {
            Some(mode) => options
                .system(zip::System::Unix)
                .external_attributes(mode << 16),
            None => options.system(zip::System::Dos),
        }
    }

    fn file_mode(&mut self, name: &str, data: &[u8], mode: Option<u32>) -> &mut Self {
        self.writer
            .start_file(name, Self::options(mode))
            .expect("start file");
        self.writer.write_all(data).expect("write");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, Some(S_IFREG | 0o644))
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.writer
            .add_symlink(name, target, SimpleFileOptions::default())
            .expect("symlink");
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let writer = std::mem::replace(
            &mut self.writer,
            zip::ZipWriter::new(std::io::Cursor::new(Vec::new())),
        );
        writer.finish().expect("finish zip").into_inner()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

// ---------------------------------------------------------------------------------------------
// The sandbox: the target is a subdirectory, and everything else in the sandbox is the
// "outside" that must not change.

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Bait outside the target: a directory and a file an escaping entry would hit.
        fs::create_dir(dir.path().join("victim")).expect("mkdir");
        fs::write(dir.path().join("victim/passwd"), "root:x:0:0\n").expect("write");
        fs::write(dir.path().join("victim.txt"), "original\n").expect("write");
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, bytes).expect("write archive");
        path
    }

    /// Everything in the sandbox except the target: path → (kind, mode, size, contents or
    /// link target).
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        walk(self.path(), self.path(), &mut out, &[self.dest()]);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>, skip: &[PathBuf]) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if skip.contains(&path) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        let mode = meta.mode() & 0o7777;
        let desc = if meta.file_type().is_symlink() {
            format!(
                "link -> {}",
                fs::read_link(&path).expect("readlink").display()
            )
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else if meta.is_file() {
            let data = fs::read(&path).expect("read");
            let shown = if data.len() <= 64 {
                format!("{:?}", String::from_utf8_lossy(&data))
            } else {
                let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
                format!("{} bytes, byte sum {sum}", data.len())
            };
            format!("file {mode:o} nlink={} {shown}", meta.nlink())
        } else {
            format!("special {:o}", meta.mode())
        };
        out.insert(rel, desc);
        if meta.is_dir() {
            walk(root, &path, out, skip);
        }
    }
}

/// A tree's listing relative to its root.
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &[]);
    out
}

fn small_limits() -> ExtractLimits {
    ExtractLimits {
        max_total_bytes: 1024 * 1024,
        max_entries: 100,
        ..ExtractLimits::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile archives

/// How a hostile archive must be refused.
#[derive(Debug, Clone)]
enum Refusal {
    /// `UnsafeEntry` naming this entry.
    Unsafe(String),
    /// `Corrupt` whose reason names this entry.
    Corrupt(String),
    Limit,
    /// `ImplausibleRatio` naming this entry.
    Ratio(String),
    GzipNotTar,
    Unknown,
}

fn unsafe_(name: &str) -> Refusal {
    Refusal::Unsafe(name.to_string())
}

/// Extracts `bytes` into a fresh sandbox's target and checks the refusal, and that nothing
/// outside the target changed. Returns the sandbox for further checks.
fn check_refused(
    case: &str,
    archive_name: &str,
    bytes: &[u8],
    limits: &ExtractLimits,
    want: &Refusal,
) -> Sandbox {
    check_refused_in(Sandbox::new(), case, archive_name, bytes, limits, want)
}

fn check_refused_in(
    sandbox: Sandbox,
    case: &str,
    archive_name: &str,
    bytes: &[u8],
    limits: &ExtractLimits,
    want: &Refusal,
) -> Sandbox {
    let archive = sandbox.archive(archive_name, bytes);
    let before = sandbox.outside();
    let result = extract(&archive, &sandbox.dest(), limits);
    let after = sandbox.outside();
    assert_eq!(
        before, after,
        "{case}: something changed outside the target"
    );
    let err = match result {
        Ok(summary) => panic!("{case}: extracted ({summary:?}) but should have been refused"),
        Err(err) => err,
    };
    let ok = match (want, &err) {
        (Refusal::Unsafe(name), ExtractError::UnsafeEntry { entry, .. }) => entry == name,
        (Refusal::Corrupt(name), ExtractError::Corrupt { reason, .. }) => {
            reason.contains(&format!("{name:?}"))
        }
        (Refusal::Limit, ExtractError::LimitExceeded { .. }) => true,
        (Refusal::Ratio(name), ExtractError::ImplausibleRatio { entry, .. }) => entry == name,
        (Refusal::GzipNotTar, ExtractError::GzipNotTar { path }) => path == &archive,
        (Refusal::Unknown, ExtractError::UnknownFormat { path }) => path == &archive,
        _ => false,
    };
    assert!(ok, "{case}: wanted {want:?}, got {err:?} ({err})");
    if let Refusal::Unsafe(name) | Refusal::Corrupt(name) = want {
        assert!(err.to_string().contains(name.as_str()), "{case}: {err}");
    }
    sandbox
}

type Case = (&'static str, Vec<u8>, Refusal);

/// Hostile tars aimed at `outside`, the sandbox around the target (which holds `victim/` and
/// `victim.txt`), so that an escape would show in the sandbox listing instead of touching the
/// host's real files.
fn hostile_tars(outside: &Path) -> Vec<Case> {
    let abs_file = outside.join("victim.txt").display().to_string();
    let abs_dir = outside.join("victim").display().to_string();
    let abs_passwd = outside.join("victim/passwd").display().to_string();
    vec![
        (
            "absolute path",
            RawTar::default()
                .file("ok.txt", b"ok")
                .file(&abs_file, b"pwned")
                .finish(),
            unsafe_(&abs_file),
        ),
        (
            "parent directory",
            RawTar::default().file("../victim.txt", b"pwned").finish(),
            unsafe_("../victim.txt"),
        ),
        (
            "parent directory after a name",
            RawTar::default()
                .file("a/../../victim.txt", b"pwned")
                .finish(),
            unsafe_("a/../../victim.txt"),
        ),
        (
            "dot-dot that stays inside is refused too",
            RawTar::default().file("a/../b", b"x").finish(),
            unsafe_("a/../b"),
        ),
        (
            "parent directory in a directory entry",
            RawTar::default().dir("../victim/sub").finish(),
            unsafe_("../victim/sub"),
        ),
        (
            "symlink to an absolute directory, then a file through it",
            RawTar::default()
                .symlink("etc", &abs_dir)
                .file("etc/passwd", b"pwned")
                .finish(),
            unsafe_("etc/passwd"),
        ),
        (
            "symlink to /etc",
            RawTar::default()
                .symlink("etc", "/etc")
                .file("etc/passwd", b"x")
                .finish(),
            unsafe_("etc/passwd"),
        ),
        (
            "symlink escaping with dot-dot, then a file through it",
            RawTar::default()
                .dir("d")
                .symlink("d/link", "../../victim")
                .file("d/link/passwd", b"pwned")
                .finish(),
            unsafe_("d/link/passwd"),
        ),
        (
            "file through a symlink to the target's parent",
            RawTar::default()
                .symlink("up", "..")
                .file("up/victim.txt", b"pwned")
                .finish(),
            unsafe_("up/victim.txt"),
        ),
        (
            "file through a symlink climbing through another link",
            RawTar::default()
                .dir("d")
                .symlink("d/up", "..")
                .symlink("esc", "d/up/..")
                .file("esc/victim.txt", b"pwned")
                .finish(),
            unsafe_("esc/victim.txt"),
        ),
        (
            "hard link through a symlink leaving the bundle",
            RawTar::default()
                .symlink("out", "..")
                .hardlink("h", "out/victim.txt")
                .finish(),
            unsafe_("h"),
        ),
        (
            "file written through an inside symlink",
            RawTar::default()
                .dir("real")
                .symlink("alias", "real")
                .file("alias/file", b"x")
                .finish(),
            unsafe_("alias/file"),
        ),
        (
            "hard link to /etc/passwd",
            RawTar::default().hardlink("pw", "/etc/passwd").finish(),
            unsafe_("pw"),
        ),
        (
            "hard link to an absolute file outside",
            RawTar::default().hardlink("pw", &abs_passwd).finish(),
            unsafe_("pw"),
        ),
        (
            "hard link escaping with dot-dot",
            RawTar::default()
                .hardlink("pw", "../victim/passwd")
                .finish(),
            unsafe_("pw"),
        ),
        (
            "hard link to a file not extracted yet",
            RawTar::default()
                .hardlink("pw", "later.txt")
                .file("later.txt", b"x")
                .finish(),
            unsafe_("pw"),
        ),
        (
            "hard link to a symlink",
            RawTar::default()
                .file("f", b"x")
                .symlink("s", "f")
                .hardlink("h", "s")
                .finish(),
            unsafe_("h"),
        ),
        (
            "hard link to a directory",
            RawTar::default().dir("d").hardlink("h", "d").finish(),
            unsafe_("h"),
        ),
        (
            "hard link through a symlinked directory",
            RawTar::default()
                .file("d/f", b"x")
                .symlink("alias", "d")
                .hardlink("h", "alias/f")
                .finish(),
            unsafe_("h"),
        ),
        (
            "character device",
            RawTar::default().special("null", b'3').finish(),
            unsafe_("null"),
        ),
        (
            "block device",
            RawTar::default().special("sda", b'4').finish(),
            unsafe_("sda"),
        ),
        (
            "fifo",
            RawTar::default().special("pipe", b'6').finish(),
            unsafe_("pipe"),
        ),
        (
            "unknown entry type",
            RawTar::default().special("odd", b'Z').finish(),
            unsafe_("odd"),
        ),
        (
            "file replacing a directory",
            RawTar::default()
                .dir("d")
                .file("d/f", b"x")
                .file("d", b"x")
                .finish(),
            unsafe_("d"),
        ),
        (
            "file under a file",
            RawTar::default().file("f", b"x").file("f/g", b"x").finish(),
            unsafe_("f/g"),
        ),
        (
            "header claims more bytes than the archive holds",
            RawTar::default()
                .raw(RawEntry {
                    name: "liar",
                    data: b"only ten b",
                    claimed_size: Some(1_000_000),
                    ..RawEntry::default()
                })
                .finish(),
            Refusal::Corrupt("liar".to_string()),
        ),
        (
            "header claims fewer bytes than follow",
            RawTar::default()
                .raw(RawEntry {
                    name: "short",
                    data: &[b'x'; 2000],
                    claimed_size: Some(5),
                    ..RawEntry::default()
                })
                .finish(),
            Refusal::Corrupt("short".to_string()),
        ),
        (
            "too many entries",
            {
                let mut tar = RawTar::default();
                for i in 0..101 {
                    tar.file(&format!("f{i}"), b"x");
                }
                tar.finish()
            },
            Refusal::Limit,
        ),
        (
            "too many bytes",
            RawTar::default()
                .file("a", &vec![7u8; 600 * 1024])
                .file("b", &vec![7u8; 600 * 1024])
                .finish(),
            Refusal::Limit,
        ),
        (
            "header claims a huge size",
            RawTar::default()
                .raw(RawEntry {
                    name: "huge",
                    data: &vec![0u8; 2 * 1024 * 1024],
                    claimed_size: Some(4 * 1024 * 1024 * 1024),
                    ..RawEntry::default()
                })
                .finish(),
            Refusal::Limit,
        ),
    ]
}

/// Runs every case of a corpus in its own sandbox, the archive built against that sandbox.
fn check_corpus(corpus: fn(&Path) -> Vec<Case>, archive_name: &str, compress: bool) {
    let count = corpus(Path::new("/probe")).len();
    assert!(count >= 10, "the corpus lost cases");
    for index in 0..count {
        let sandbox = Sandbox::new();
        let mut cases = corpus(sandbox.path());
        let (case, bytes, want) = cases.swap_remove(index);
        let bytes = if compress { gzip(&bytes) } else { bytes };
        let case = format!("{case} ({archive_name})");
        check_refused_in(sandbox, &case, archive_name, &bytes, &small_limits(), &want);
    }
}

#[test]
fn hostile_tars_are_refused_and_nothing_lands_outside() {
    check_corpus(hostile_tars, "bundle.tar", false);
}

#[test]
fn hostile_tgzs_are_refused_and_nothing_lands_outside() {
    check_corpus(hostile_tars, "bundle.tgz", true);
}

#[test]
fn hostile_zips_are_refused_and_nothing_lands_outside() {
    check_corpus(hostile_zips, "bundle.zip", false);
}

fn hostile_zips(outside: &Path) -> Vec<Case> {
    let abs_file = outside.join("victim.txt").display().to_string();
    let abs_dir = outside.join("victim").display().to_string();
    let mut many = RawZip::new();
    for i in 0..101 {
        many.file(&format!("f{i}"), b"x");
    }
    vec![
        (
            "absolute path",
            RawZip::new().file(&abs_file, b"pwned").finish(),
            unsafe_(&abs_file),
        ),
        (
            "parent directory",
            RawZip::new().file("../victim.txt", b"pwned").finish(),
            unsafe_("../victim.txt"),
        ),
        (
            "parent directory after a name",
            RawZip::new().file("a/../../victim.txt", b"pwned").finish(),
            unsafe_("a/../../victim.txt"),
        ),
        (
            "symlink to an absolute directory, then a file through it",
            RawZip::new()
                .symlink("etc", &abs_dir)
                .file("etc/passwd", b"pwned")
                .finish(),
            unsafe_("etc/passwd"),
        ),
        (
            "symlink escaping with dot-dot, then a file through it",
            RawZip::new()
                .symlink("link", "../victim")
                .file("link/passwd", b"pwned")
                .finish(),
            unsafe_("link/passwd"),
        ),
        (
            "file written through an inside symlink",
            RawZip::new()
                .file("real/keep", b"x")
                .symlink("alias", "real")
                .file("alias/file", b"x")
                .finish(),
            unsafe_("alias/file"),
        ),
        (
            "character device mode",
            RawZip::new()
                .file_mode("null", b"", Some(S_IFCHR | 0o666))
                .finish(),
            unsafe_("null"),
        ),
        (
            "block device mode",
            RawZip::new()
                .file_mode("sda", b"", Some(S_IFBLK | 0o660))
                .finish(),
            unsafe_("sda"),
        ),
        (
            "fifo mode",
            RawZip::new()
                .file_mode("pipe", b"", Some(S_IFIFO | 0o644))
                .finish(),
            unsafe_("pipe"),
        ),
        (
            "socket mode",
            RawZip::new()
                .file_mode("sock", b"", Some(S_IFSOCK | 0o644))
                .finish(),
            unsafe_("sock"),
        ),
        ("too many entries", many.finish(), Refusal::Limit),
        (
            "too many bytes",
            RawZip::new()
                .file("a", &vec![7u8; 600 * 1024])
                .file("b", &vec![7u8; 600 * 1024])
                .finish(),
            Refusal::Limit,
        ),
    ]
}

fn bytes_under(dir: &Path) -> u64 {
    listing(dir)
        .keys()
        .map(|rel| {
            fs::symlink_metadata(dir.join(rel))
                .map(|m| if m.is_file() { m.len() } else { 0 })
                .unwrap_or(0)
        })
        .sum()
}

/// Offsets of every local and central header in a zip with one entry.
fn patch_zip_sizes(zip: &mut [u8], claimed: u32) {
    let le = claimed.to_le_bytes();
    let mut i = 0;
    while i + 4 <= zip.len() {
        match &zip[i..i + 4] {
            b"PK\x03\x04" => zip[i + 22..i + 26].copy_from_slice(&le),
            b"PK\x01\x02" => zip[i + 24..i + 28].copy_from_slice(&le),
            _ => {}
        }
        i += 1;
    }
}

#[test]
fn zip_bomb_stops_at_the_byte_cap() {
    let zeros = vec![0u8; 100 * 1024 * 1024];
    let honest = RawZip::new().file("zeros", &zeros).finish();
    drop(zeros);
    assert!(honest.len() < 1024 * 1024, "the bomb should compress well");
    let limits = ExtractLimits {
        max_total_bytes: 4 * 1024 * 1024,
        ..ExtractLimits::default()
    };
    // Honest headers: refused from the central directory, before a byte is written.
    for limits in [
        limits.clone(),
        ExtractLimits {
            max_total_bytes: u64::MAX,
            ..ExtractLimits::default()
        },
    ] {
        let want = if limits.max_total_bytes == u64::MAX {
            Refusal::Ratio("zeros".to_string())
        } else {
            Refusal::Limit
        };
        let sandbox = check_refused("zip bomb", "bomb.zip", &honest, &limits, &want);
        assert_eq!(bytes_under(&sandbox.dest()), 0, "nothing may be written");
    }

    // The same bomb whose headers claim 1000 bytes: refused either at the cap or when the
    // data disagrees with the header, never after writing more than the cap.
    let mut liar = honest;
    patch_zip_sizes(&mut liar, 1000);
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("liar.zip", &liar);
    let before = sandbox.outside();
    let err = extract(&archive, &sandbox.dest(), &limits).expect_err("lying bomb");
    assert!(
        matches!(
            err,
            ExtractError::LimitExceeded { .. } | ExtractError::Corrupt { .. }
        ),
        "{err:?}"
    );
    assert_eq!(before, sandbox.outside());
    assert!(bytes_under(&sandbox.dest()) <= limits.max_total_bytes);
}

#[test]
fn truncated_and_corrupt_archives_fail_cleanly() {
    let tar = RawTar::default()
        .file("a.txt", &vec![b'a'; 3000])
        .file("b.txt", &vec![b'b'; 3000])
        .finish();
    let tgz = gzip(&tar);
    let zip = RawZip::new()
        .file("a.txt", &vec![b'a'; 3000])
        .file("b.txt", b"b")
        .finish();
    let mut bad_checksum = tar.clone();
    bad_checksum[512 * 7 + 10] ^= 0xff; // inside b.txt's header
    let mut flipped_zip = zip.clone();
    let data_at = 30 + "a.txt".len() + 4;
    flipped_zip[data_at] ^= 0xff;
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("tar cut inside a file", "x.tar", tar[..512 + 1000].to_vec()),
        ("tar with a bad header checksum", "x.tar", bad_checksum),
        ("tgz cut in half", "x.tgz", tgz[..tgz.len() / 2].to_vec()),
        ("zip cut in half", "x.zip", zip[..zip.len() / 2].to_vec()),
        ("zip with damaged data", "x.zip", flipped_zip),
        ("zip header only", "x.zip", b"PK\x03\x04garbage".to_vec()),
        ("gzip header only", "x.tgz", b"\x1f\x8b".to_vec()),
    ];
    for (case, name, bytes) in cases {
        let sandbox = Sandbox::new();
        let archive = sandbox.archive(name, &bytes);
        let before = sandbox.outside();
        let err = extract(&archive, &sandbox.dest(), &small_limits()).expect_err(case);
        assert!(
            matches!(
                err,
                ExtractError::Corrupt { .. } | ExtractError::GzipNotTar { .. }
            ),
            "{case}: {err:?}"
        );
        assert!(!err.to_string().is_empty());
        assert_eq!(before, sandbox.outside(), "{case}");
    }
}

#[test]
fn gzip_that_is_not_tar_is_refused() {
    let text = gzip(&b"just some text, not a tar archive\n".repeat(100));
    check_refused(
        "gzip of text",
        "bundle.tar.gz",
        &text,
        &small_limits(),
        &Refusal::GzipNotTar,
    );
}

#[test]
fn unknown_formats_are_refused_naming_the_file() {
    for (case, bytes) in [
        ("text", b"hello world\n".to_vec()),
        ("empty", Vec::new()),
        ("zeros", vec![0u8; 2048]),
    ] {
        check_refused(
            case,
            "bundle.zip",
            &bytes,
            &small_limits(),
            &Refusal::Unknown,
        );
    }
}

#[test]
fn a_non_empty_target_is_refused() {
    let sandbox = Sandbox::new();
    let archive = sandbox.archive("b.tar", &RawTar::default().file("a", b"x").finish());
    fs::create_dir(sandbox.dest()).expect("mkdir");
    fs::write(sandbox.dest().join("leftover"), "x").expect("write");
    let err = extract(&archive, &sandbox.dest(), &small_limits()).expect_err("not empty");
    assert!(matches!(err, ExtractError::DestNotEmpty { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Modes, owners, times, duplicates

fn extract_ok(name: &str, bytes: &[u8], limits: &ExtractLimits) -> (Sandbox, ExtractSummary) {
    let sandbox = Sandbox::new();
    let archive = sandbox.archive(name, bytes);
    let before = sandbox.outside();
    let summary =
        extract(&archive, &sandbox.dest(), limits).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(before, sandbox.outside());
    (sandbox, summary)
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
}

#[test]
fn setuid_setgid_and_sticky_are_stripped_unless_allowed() {
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "suid",
            data: b"x",
            mode: 0o4755,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "sgid",
            data: b"x",
            mode: 0o2750,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "tmp",
            kind: b'5',
            mode: 0o1777,
            ..RawEntry::default()
        })
        .finish();
    let zip = RawZip::new()
        .file_mode("suid", b"x", Some(S_IFREG | 0o4755))
        .file_mode("sgid", b"x", Some(S_IFREG | 0o2750))
        .file_mode("tmp/", b"", Some(S_IFDIR | 0o1777))
        .finish();
    for (name, bytes) in [("b.tar", &tar), ("b.zip", &zip)] {
        let (sandbox, _) = extract_ok(name, bytes, &small_limits());
        let dest = sandbox.dest();
        assert_eq!(mode_of(&dest.join("suid")), 0o755, "{name}");
        assert_eq!(mode_of(&dest.join("sgid")), 0o750, "{name}");
        assert_eq!(mode_of(&dest.join("tmp")), 0o755, "{name}");

        let allow = ExtractLimits {
            allow_setuid: true,
            ..small_limits()
        };
        let (sandbox, _) = extract_ok(name, bytes, &allow);
        let dest = sandbox.dest();
        assert_eq!(mode_of(&dest.join("suid")), 0o4755, "{name}");
        assert_eq!(mode_of(&dest.join("sgid")), 0o2750, "{name}");
        assert_eq!(mode_of(&dest.join("tmp")), 0o1755, "{name}");
    }
}

#[test]
fn zip_entries_without_unix_modes_get_defaults() {
    let zip = RawZip::new()
        .file_mode("dir/", b"", None)
        .file_mode("dir/file", b"x", None)
        .finish();
    let (sandbox, _) = extract_ok("b.zip", &zip, &small_limits());
    assert_eq!(mode_of(&sandbox.dest().join("dir")), 0o755);
    assert_eq!(mode_of(&sandbox.dest().join("dir/file")), 0o644);
}

#[test]
fn read_only_directories_still_receive_their_contents() {
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "ro",
            kind: b'5',
            mode: 0o555,
            ..RawEntry::default()
        })
        .file("ro/inner/file", b"x")
        .finish();
    let (sandbox, _) = extract_ok("b.tar", &tar, &small_limits());
    assert_eq!(mode_of(&sandbox.dest().join("ro")), 0o555);
    assert_eq!(
        fs::read(sandbox.dest().join("ro/inner/file")).expect("read"),
        b"x"
    );
    assert_eq!(mode_of(&sandbox.dest().join("ro/inner")), 0o755);
}

#[test]
fn mtimes_are_kept() {
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "d",
            kind: b'5',
            mode: 0o755,
            mtime: 1_500_000_000,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "d/f",
            data: b"x",
            mtime: 1_234_567_890,
            ..RawEntry::default()
        })
        .finish();
    let (sandbox, _) = extract_ok("b.tar", &tar, &small_limits());
    let dest = sandbox.dest();
    assert_eq!(
        fs::metadata(dest.join("d/f")).expect("stat").mtime(),
        1_234_567_890
    );
    assert_eq!(
        fs::metadata(dest.join("d")).expect("stat").mtime(),
        1_500_000_000
    );

    // Zip's MS-DOS time 2020-01-02 03:04:06, read as UTC.
    let zip = RawZip::new().file("f", b"x").finish();
    let (sandbox, _) = extract_ok("b.zip", &zip, &small_limits());
    assert_eq!(
        fs::metadata(sandbox.dest().join("f"))
            .expect("stat")
            .mtime(),
        1_577_934_246
    );
}

/// Regression (found by the `extract` fuzz target): a tar mtime in GNU base-256 form can hold
/// any 64-bit value, and adding it to the epoch panicked. Such an mtime is dropped; a far but
/// representable one is kept or clamped by the filesystem, never an error.
#[test]
fn mtimes_beyond_what_the_system_holds_are_dropped() {
    for secs in [u64::MAX, 1 << 63, 1 << 40] {
        let mut tar = RawTar::default();
        tar.file("far", b"x");
        // The header's mtime field as base-256: a marker byte, then the value big-endian.
        let h = &mut tar.bytes[..512];
        h[136..140].copy_from_slice(&[0x80, 0, 0, 0]);
        h[140..148].copy_from_slice(&secs.to_be_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let bytes = tar.finish();
        let (sandbox, _) = extract_ok("b.tar", &bytes, &small_limits());
        assert_eq!(
            fs::read(sandbox.dest().join("far")).expect("read"),
            b"x",
            "mtime {secs}"
        );
    }
}

#[test]
#[ignore = "needs root: chown"]
fn archive_owners_apply_only_when_asked() {
    assert!(nix::unistd::geteuid().is_root(), "needs root to chown");
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "d",
            kind: b'5',
            mode: 0o755,
            uid: 4321,
            gid: 8765,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "d/f",
            data: b"x",
            mode: 0o4755,
            uid: 1234,
            gid: 5678,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "d/l",
            kind: b'2',
            link: "f",
            uid: 1111,
            gid: 2222,
            ..RawEntry::default()
        })
        .finish();
    let (sandbox, _) = extract_ok("b.tar", &tar, &small_limits());
    let meta = fs::symlink_metadata(sandbox.dest().join("d/f")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    let limits = ExtractLimits {
        preserve_owner: true,
        allow_setuid: true,
        ..small_limits()
    };
    let (sandbox, _) = extract_ok("b.tar", &tar, &limits);
    let owner = |rel: &str| {
        let meta = fs::symlink_metadata(sandbox.dest().join(rel)).expect("stat");
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("d"), (4321, 8765));
    assert_eq!(owner("d/f"), (1234, 5678));
    assert_eq!(owner("d/l"), (1111, 2222));
    // chown before chmod, so the setuid bit survives when allowed.
    assert_eq!(mode_of(&sandbox.dest().join("d/f")), 0o4755);
}

#[test]
fn duplicate_entries_replace_without_following_links() {
    let tar = RawTar::default()
        .file("target.txt", b"original")
        .symlink("x", "target.txt")
        .file("x", b"replacement")
        .file("dup", b"first")
        .file("dup", b"second")
        .finish();
    let (sandbox, summary) = extract_ok("b.tar", &tar, &small_limits());
    let dest = sandbox.dest();
    assert_eq!(
        fs::read(dest.join("target.txt")).expect("read"),
        b"original"
    );
    assert!(fs::symlink_metadata(dest.join("x"))
        .expect("lstat")
        .is_file());
    assert_eq!(fs::read(dest.join("x")).expect("read"), b"replacement");
    assert_eq!(fs::read(dest.join("dup")).expect("read"), b"second");
    assert_eq!(summary.entries, 5);
}

#[test]
fn hard_links_to_extracted_files_work() {
    let tar = RawTar::default()
        .file("a/f", b"shared")
        .hardlink("b", "a/f")
        .hardlink("./c", "./a/f")
        .finish();
    let (sandbox, _) = extract_ok("b.tar", &tar, &small_limits());
    let dest = sandbox.dest();
    let ino = |rel: &str| fs::metadata(dest.join(rel)).expect("stat").ino();
    assert_eq!(ino("a/f"), ino("b"));
    assert_eq!(ino("a/f"), ino("c"));
    assert_eq!(fs::read(dest.join("c")).expect("read"), b"shared");
}

#[test]
fn safe_symlinks_are_kept() {
    let tar = RawTar::default()
        .file("lib/v2/lib.so", b"x")
        .symlink("lib/current", "v2")
        .symlink("lib/v2/up", "../../lib/v2/lib.so")
        .symlink("self", ".")
        .symlink("dangling", "does/not/exist")
        .finish();
    let (sandbox, _) = extract_ok("b.tar", &tar, &small_limits());
    let dest = sandbox.dest();
    let target = |rel: &str| fs::read_link(dest.join(rel)).expect("readlink");
    assert_eq!(target("lib/current"), Path::new("v2"));
    assert_eq!(target("lib/v2/up"), Path::new("../../lib/v2/lib.so"));
    assert_eq!(target("self"), Path::new("."));
    assert_eq!(target("dangling"), Path::new("does/not/exist"));
    assert_eq!(
        fs::read(dest.join("lib/current/lib.so")).expect("read"),
        b"x"
    );
}

#[test]
fn pax_global_headers_and_dot_prefixes_are_handled() {
    // `git archive` starts with a pax global header holding the commit id.
    let record = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "pax_global_header",
            kind: b'g',
            data: record,
            ..RawEntry::default()
        })
        .dir("./")
        .file("./app/appspec.yml", b"version: 0.0\n")
        .finish();
    let (sandbox, summary) = extract_ok("b.tar", &tar, &small_limits());
    assert_eq!(
        listing(&sandbox.dest()).len(),
        2,
        "{:?}",
        listing(&sandbox.dest())
    );
    assert!(sandbox.dest().join("app/appspec.yml").is_file());
    assert_eq!(summary.entries, 3);
    assert_eq!(summary.bytes, 13);
}

// ---------------------------------------------------------------------------------------------
// Formats

#[test]
fn formats_are_detected_from_content_not_names() {
    let sandbox = Sandbox::new();
    let tar = RawTar::default().file("a", b"x").finish();
    let v7 = RawTar::default()
        .raw(RawEntry {
            name: "a",
            data: b"x",
            v7: true,
            ..RawEntry::default()
        })
        .finish();
    let zip = RawZip::new().file("a", b"x").finish();
    let empty_zip = RawZip::new().finish();
    let cases: Vec<(&str, Vec<u8>, ArchiveFormat)> = vec![
        ("tar-named.zip", tar.clone(), ArchiveFormat::Tar),
        ("v7-named.tgz", v7.clone(), ArchiveFormat::Tar),
        ("zip-named.tar.gz", zip, ArchiveFormat::Zip),
        ("empty-zip.tar", empty_zip, ArchiveFormat::Zip),
        ("tgz-named.tar", gzip(&tar), ArchiveFormat::TarGz),
        ("v7-gz-named", gzip(&v7), ArchiveFormat::TarGz),
    ];
    for (name, bytes, want) in cases {
        let path = sandbox.archive(name, &bytes);
        assert_eq!(detect_format(&path).expect(name), want, "{name}");
        let dest = sandbox.path().join(format!("out-{name}"));
        extract(&path, &dest, &small_limits()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    let missing = sandbox.path().join("missing.zip");
    assert!(matches!(
        detect_format(&missing),
        Err(ExtractError::Io { .. })
    ));
}

/// A source tree with the things a bundle holds: nested directories with their own modes,
/// executables, empty files and directories, symlinks to files, directories and upwards.
fn make_tree(root: &Path) {
    let dir = |rel: &str, mode: u32| {
        fs::create_dir_all(root.join(rel)).expect("mkdir");
        fs::set_permissions(root.join(rel), Permissions::from_mode(mode)).expect("chmod");
    };
    let file = |rel: &str, data: &[u8], mode: u32| {
        fs::write(root.join(rel), data).expect("write");
        fs::set_permissions(root.join(rel), Permissions::from_mode(mode)).expect("chmod");
    };
    let link = |rel: &str, target: &str| {
        std::os::unix::fs::symlink(target, root.join(rel)).expect("symlink");
    };
    file("appspec.yml", b"version: 0.0\nos: linux\n", 0o644);
    dir("scripts", 0o750);
    file("scripts/start.sh", b"#!/bin/sh\necho start\n", 0o755);
    file("scripts/secret.env", b"TOKEN=1\n", 0o600);
    dir("app/static/css", 0o755);
    file("app/static/css/site.css", &b"body{}\n".repeat(5000), 0o644);
    file("app/empty", b"", 0o644);
    dir("app/cache", 0o700);
    link("app/current", "static");
    link("app/static/up", "../../appspec.yml");
    link("start", "scripts/start.sh");
    dir(&format!("deep/{}", "long-directory-name/".repeat(8)), 0o755);
    file(
        &format!("deep/{}leaf.txt", "long-directory-name/".repeat(8)),
        b"deep",
        0o644,
    );
}

/// Packs `root` as a tar the way common tools do (directories first, relative names).
fn pack_tar(root: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for rel in listing(root).keys() {
        builder
            .append_path_with_name(root.join(rel), rel)
            .expect("append");
    }
    builder.into_inner().expect("finish tar")
}

fn pack_zip(root: &Path) -> Vec<u8> {
    let mut zip = RawZip::new();
    for rel in listing(root).keys() {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let name = rel.to_str().expect("utf-8 name");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            zip.symlink(name, target.to_str().expect("utf-8 target"));
        } else if meta.is_dir() {
            zip.file_mode(&format!("{name}/"), b"", Some(meta.mode()));
        } else {
            let data = fs::read(&path).expect("read");
            zip.file_mode(name, &data, Some(meta.mode()));
        }
    }
    zip.finish()
}

#[test]
fn one_tree_round_trips_through_zip_tar_and_tgz() {
    let src = tempfile::tempdir().expect("tempdir");
    make_tree(src.path());
    let expected = listing(src.path());
    assert!(expected.len() >= 15, "the tree lost entries: {expected:?}");
    let tar = pack_tar(src.path());
    let archives = [
        ("bundle.zip", pack_zip(src.path())),
        ("bundle.tgz", gzip(&tar)),
        ("bundle.tar", tar),
    ];
    for (name, bytes) in &archives {
        let (sandbox, summary) = extract_ok(name, bytes, &ExtractLimits::default());
        assert_eq!(listing(&sandbox.dest()), expected, "{name}");
        assert_eq!(summary.entries, expected.len() as u64, "{name}");
        let css = 7 * 5000;
        assert!(summary.bytes >= css, "{name}: {summary:?}");
    }
}

#[test]
fn github_style_archives_find_their_root() {
    let src = tempfile::tempdir().expect("tempdir");
    let top = src.path().join("owner-repo-0123abc");
    fs::create_dir(&top).expect("mkdir");
    make_tree(&top);
    let tar = pack_tar(src.path());
    let (sandbox, _) = extract_ok("b.tgz", &gzip(&tar), &small_limits());
    let root = crate::bundle::bundle_root(&sandbox.dest());
    assert_eq!(root, sandbox.dest().join("owner-repo-0123abc"));
    assert_eq!(
        crate::bundle::find_appspec(&root, None).expect("appspec"),
        root.join("appspec.yml")
    );
}

// ---------------------------------------------------------------------------------------------
// Symlinks out of the bundle, modes, zip bombs and free space

/// Regression: `logs -> /var/log` was refused in an archive ("symlink to absolute path") but
/// installed from a directory. Links pointing out are kept as links; nothing goes through them.
#[test]
fn symlinks_leaving_the_bundle_are_kept_as_leaves() {
    // (name, target, whether it may resolve outside the bundle)
    let links = [
        ("logs", "/var/log", true),
        ("up", "..", true),
        ("d/out", "../../victim", true),
        ("d/up", "..", false),
        ("esc", "d/up/..", true),
    ];
    let mut tar = RawTar::default();
    tar.file("appspec.yml", b"version: 0.0\n").dir("d");
    let mut zip = RawZip::new();
    zip.file("appspec.yml", b"version: 0.0\n");
    for (name, target, _) in links {
        tar.symlink(name, target);
        zip.symlink(name, target);
    }
    let tar = tar.finish();
    let archives = [
        ("b.tar", tar.clone()),
        ("b.tgz", gzip(&tar)),
        ("b.zip", zip.finish()),
    ];
    for (archive_name, bytes) in archives {
        let sandbox = Sandbox::new();
        let archive = sandbox.archive(archive_name, &bytes);
        let before = sandbox.outside();
        extract(&archive, &sandbox.dest(), &small_limits())
            .unwrap_or_else(|e| panic!("{archive_name}: {e}"));
        assert_eq!(before, sandbox.outside(), "{archive_name}");
        for (name, target, leaves) in links {
            let path = sandbox.dest().join(name);
            assert_eq!(
                fs::read_link(&path).expect("a symlink"),
                Path::new(target),
                "{archive_name}: {name}"
            );
            assert_eq!(
                link_leaves_bundle(Path::new(name), target.as_bytes()),
                leaves,
                "{name} -> {target}"
            );
        }
    }
    for (name, target) in [
        ("a", "b"),
        ("d/x", "../a"),
        ("d/e/x", "../../a/b"),
        ("s", "."),
    ] {
        assert!(
            !link_leaves_bundle(Path::new(name), target.as_bytes()),
            "{name} -> {target}"
        );
    }
}

/// Regression: a 0777 script from the archive stayed 0777, so another user could rewrite a
/// script the agent later runs as root.
#[test]
fn group_and_other_write_bits_are_masked() {
    let tar = RawTar::default()
        .raw(RawEntry {
            name: "stop.sh",
            data: b"#!/bin/sh\n",
            mode: 0o777,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "data",
            data: b"x",
            mode: 0o666,
            ..RawEntry::default()
        })
        .raw(RawEntry {
            name: "open",
            kind: b'5',
            mode: 0o777,
            ..RawEntry::default()
        })
        .finish();
    let zip = RawZip::new()
        .file_mode("stop.sh", b"#!/bin/sh\n", Some(S_IFREG | 0o777))
        .file_mode("data", b"x", Some(S_IFREG | 0o666))
        .file_mode("open/", b"", Some(S_IFDIR | 0o777))
        .finish();
    for (name, bytes) in [("b.tar", &tar), ("b.zip", &zip)] {
        let (sandbox, _) = extract_ok(name, bytes, &small_limits());
        let dest = sandbox.dest();
        assert_eq!(mode_of(&dest.join("stop.sh")), 0o755, "{name}");
        assert_eq!(mode_of(&dest.join("data")), 0o644, "{name}");
        assert_eq!(mode_of(&dest.join("open")), 0o755, "{name}");
    }
}

/// The bomb builder makes a real archive: a small one extracts to the zeros it declares.
#[test]
fn the_zero_zip_bomb_builder_writes_a_valid_zip() {
    let sandbox = Sandbox::new();
    let archive = sandbox.path().join("small.zip");
    hoist_tests::archive::write_zero_zip_bomb(&archive, "zeros", 4).expect("bomb");
    let summary = extract(&archive, &sandbox.dest(), &ExtractLimits::default()).expect("extract");
    assert_eq!(summary.bytes, 4 * 1024 * 1024);
    let data = fs::read(sandbox.dest().join("zeros")).expect("read");
    assert!(data.len() == 4 * 1024 * 1024 && data.iter().all(|b| *b == 0));
}

/// Regression: a 10 GiB zip of zeros (1000:1) was refused only after 8 GiB were written.
/// Its honest headers now refuse it before a byte is written: past the cap with the default
/// limits, and by its ratio when the cap would allow it.
#[test]
fn a_10_gib_zip_of_zeros_is_refused_before_writing() {
    let sandbox = Sandbox::new();
    let archive = sandbox.path().join("bomb.zip");
    hoist_tests::archive::write_zero_zip_bomb(&archive, "zeros", 10 * 1024).expect("bomb");
    let on_disk = fs::metadata(&archive).expect("stat").len();
    assert!(on_disk < 20 * 1024 * 1024, "the bomb is {on_disk} bytes");
    let unlimited = ExtractLimits {
        max_total_bytes: u64::MAX,
        ..ExtractLimits::default()
    };
    for (limits, want) in [
        (ExtractLimits::default(), Refusal::Limit),
        (unlimited, Refusal::Ratio("zeros".to_string())),
    ] {
        let bytes = fs::read(&archive).expect("read");
        let sandbox = check_refused("10 GiB bomb", "bomb.zip", &bytes, &limits, &want);
        assert!(
            listing(&sandbox.dest()).is_empty(),
            "nothing may be written"
        );
    }
}

#[test]
fn a_declared_total_that_does_not_fit_the_free_space_names_both_figures() {
    let mib = 1024 * 1024;
    let space = Space {
        available: 100 * mib,
        total: 1000 * mib,
    };
    // The margin is a twentieth of the filesystem: 50 MiB here.
    assert!(fits(Path::new("/d"), 50 * mib, space).is_ok());
    let error = fits(Path::new("/d"), 50 * mib + 1, space).expect_err("too big");
    assert_eq!(
        error.to_string(),
        format!(
            "not enough space to unpack into /d: {} bytes needed (with a margin of {}), {} available",
            50 * mib + 1,
            50 * mib,
            100 * mib
        )
    );
    let small = Space {
        available: 40 * mib,
        total: 40 * mib,
    };
    assert_eq!(margin(small), 4 * mib, "at least 4 MiB");
    let tiny = Space {
        available: 2 * mib,
        total: 2 * mib,
    };
    assert_eq!(
        margin(tiny),
        mib / 4,
        "an eighth of a filesystem under 32 MiB"
    );
    let huge = Space {
        available: u64::MAX,
        total: u64::MAX,
    };
    assert_eq!(margin(huge), 256 * mib, "at most 256 MiB");
    let unknown = Space {
        available: 0,
        total: 0,
    };
    assert!(
        fits(Path::new("/d"), mib, unknown).is_ok(),
        "no figures, no check"
    );
}

/// A tar.gz declares no total: extraction watches the disk and stops while the margin is
/// still free. Needs root to mount a small tmpfs.
#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_tgz_that_would_fill_the_filesystem_stops_before_it_is_full() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to mount a tmpfs"
    );
    let sandbox = Sandbox::new();
    let mount_point = sandbox.path().join("small");
    fs::create_dir(&mount_point).expect("mkdir");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .expect("mount");
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount_point.clone());

    // Many entries of honest sizes that each fit, 48 MiB in all; the headers say nothing of
    // the total.
    let chunk = vec![0u8; 4 * 1024 * 1024];
    let mut tar = RawTar::default();
    for i in 0..12 {
        tar.file(&format!("part{i}"), &chunk);
    }
    let tgz = gzip(&tar.finish());
    let archive = sandbox.archive("fill.tgz", &tgz);
    let limits = ExtractLimits::default();
    let error = extract(&archive, &mount_point.join("dest"), &limits).expect_err("must stop");
    assert!(matches!(error, ExtractError::NoSpace { .. }), "{error:?}");
    let left = free_space(&mount_point).expect("statvfs").available;
    assert!(left >= 2 * 1024 * 1024, "only {left} bytes left free");
}
