//! The `appspec.yml` of a CodeDeploy EC2/on-premises revision: its model, parser and validator.
//!
//! Layout:
//! - [`model`]: the validated appspec (what the agent acts on).
//! - [`parse`]: YAML in, a validated [`AppSpec`] plus warnings out, or every problem at once.
//!   Private helpers: `releases` (the Hoist section, `hoist:`), `walk` (YAML shapes and key paths), `permissions`, `acl` (setfacl
//!   entries), `selinux` (context ranges).
//!
//! This crate is pure: it reads no files and runs no commands. Callers read the file
//! (`appspec.yml` first, then `appspec.yaml`) and hand the text to [`parse`].

mod acl;
pub mod model;
mod parse;
mod permissions;
mod releases;
mod selinux;
mod walk;

pub use model::*;
pub use parse::parse;
pub use releases::RELEASES_HELP;

/// One problem or remark about an appspec, with the key path it concerns.
///
/// `path` is dotted with list indices, e.g. `hooks.AfterInstall[1].timeout`; empty for the
/// whole document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A successfully validated appspec together with the warnings found on the way
/// (unknown hook names, unknown top-level keys: CodeDeploy ignores them).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub spec: AppSpec,
    pub warnings: Vec<Diagnostic>,
}

/// Every error and warning found in one pass, when the appspec is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}
