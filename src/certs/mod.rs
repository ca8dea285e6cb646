//! The certificate tools (`--cert-init`, `--cert-makereq`,
//! `--cert-signreq`, spec §5) and the Receptor node-ID subjectAltName
//! (§5.1) that the TLS code reads back.
//!
//! [`ca`] builds certificates and requests in memory (time passed in);
//! [`tool`] is the thin shell that reads and writes the files and asks
//! the user.

pub mod ca;
mod der;
pub mod key;
pub mod pem;
pub mod san;
pub mod tool;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use der::DerError;
pub use key::RsaKey;
pub use san::{SanError, SanNames};

/// Why a cert tool failed. Messages follow Go's where Go has one.
#[derive(Debug)]
pub enum CertError {
    /// A file could not be opened, read or written.
    File { path: PathBuf, source: io::Error },
    /// A parameter is missing, conflicting or malformed.
    Param(String),
    /// An input file does not hold what it should.
    BadInput(String),
    /// Names in a request or certificate do not parse.
    San(SanError),
    /// Key generation, signing or encoding failed.
    Crypto(String),
    /// The user answered anything but yes.
    Declined,
    /// Standard input ended before an answer.
    NoAnswer,
    /// The prompt could not be written or its answer read.
    Prompt(io::Error),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::File { path, source } => {
                write!(f, "open {}: {}", path.display(), io_text(source))
            }
            CertError::Param(m) | CertError::BadInput(m) | CertError::Crypto(m) => f.write_str(m),
            CertError::San(e) => e.fmt(f),
            CertError::Declined => f.write_str("user declined"),
            CertError::NoAnswer => f.write_str(
                "no answer to \"Sign certificate (yes/no)?\": standard input is closed \
                 (use verify=true to sign without asking)",
            ),
            CertError::Prompt(e) => write!(f, "cannot ask for confirmation: {}", io_text(e)),
        }
    }
}

impl std::error::Error for CertError {}

impl From<SanError> for CertError {
    fn from(e: SanError) -> Self {
        CertError::San(e)
    }
}

/// An OS error as Go prints it (`no such file or directory`), without
/// Rust's ` (os error 2)` suffix.
pub(crate) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
