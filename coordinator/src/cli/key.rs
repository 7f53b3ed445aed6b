//! `hoist key generate --out DIR [--passphrase-file F]`: an Ed25519 signing key pair in
//! minisign's formats, `DIR/hoist.pub` (for hosts' `trust.keys`) and `DIR/hoist.key`.
//!
//! The secret key file is created 0600 with `O_CREAT|O_EXCL` (never world-readable, not even
//! for a moment, and never written through a link an attacker left), and neither file is
//! ever overwritten. Without `--passphrase-file` the secret key has no passphrase, so a CI
//! job can sign unattended; with it, the key is encrypted as minisign does (scrypt).
//! This is not a key store: it keeps no list of keys and revokes nothing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::sign::read_passphrase;
use super::UsageError;

/// The public key's file name in `--out`.
pub const PUBLIC_KEY_FILE: &str = "hoist.pub";
/// The secret key's file name in `--out`.
pub const SECRET_KEY_FILE: &str = "hoist.key";

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a signing key pair: DIR/hoist.pub (give it to hosts) and DIR/hoist.key (secret, 0600).
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write hoist.pub and hoist.key into (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Encrypt the secret key with the passphrase in this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

pub fn run(cmd: KeyCommand) -> Result<ExitCode> {
    match cmd {
        KeyCommand::Generate(args) => generate(&args),
    }
}

fn generate(args: &GenerateArgs) -> Result<ExitCode> {
    let passphrase = args
        .passphrase_file
        .as_deref()
        .map(read_passphrase)
        .transpose()?;
    let (public_path, secret_path) = (
        args.out.join(PUBLIC_KEY_FILE),
        args.out.join(SECRET_KEY_FILE),
    );
    for path in [&public_path, &secret_path] {
        if path.symlink_metadata().is_ok() {
            return Err(UsageError(format!(
                "{} already exists; refusing to overwrite a key (choose another --out)",
                path.display()
            ))
            .into());
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let encrypted = passphrase.is_some();
    let pair = match passphrase {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p.expose().to_owned())),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("generating a key pair: {e}"))?;
    let public = pair
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?
        .into_string();
    let secret = pair
        .sk
        .to_box(Some(if encrypted {
            "hoist secret key (passphrase-protected)"
        } else {
            "hoist secret key (no passphrase)"
        }))
        .map_err(|e| anyhow::anyhow!("encoding the secret key: {e}"))?
        .into_string();
    write_new(&secret_path, secret.as_bytes(), 0o600)?;
    write_new(&public_path, public.as_bytes(), 0o644)?;
    let id = hoist_protocol::signature::public_key_id(&public).unwrap_or_default();
    eprintln!(
        "wrote {} (public key {id}: list it in the hosts' trust.keys) and {} (secret, 0600{})",
        public_path.display(),
        secret_path.display(),
        if encrypted {
            ", passphrase-protected"
        } else {
            ", no passphrase"
        }
    );
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with `mode` (never an existing file or link), writes and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
