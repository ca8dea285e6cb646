//! Why a work request failed. `Display` is the text of the `ERROR:` reply,
//! the Go daemon's wording where it has one, so a controller can read a
//! remote node's reply back into the same variant (`from_remote`).

use std::fmt;
use std::io;

use super::signing::{SignError, VerifyError};

/// One variant per failure a caller may branch on or a peer may report.
/// Errors from another node that match none of the known forms stay
/// `Remote`, verbatim.
#[derive(Debug)]
pub enum WorkError {
    /// No unit has this ID (anymore).
    UnknownUnit(String),
    /// No work type of this name is configured here.
    UnknownType(String),
    /// `ttl` was given for a unit that runs on this node.
    TtlForLocal,
    /// Runtime `params` for a work type without `allowruntimeparams`.
    ParamsNotAllowed,
    UnknownTlsConfig(String),
    /// `secret_*` params may only travel over TLS.
    SecretsWithoutTls,
    /// A request for a remote unit could not be signed.
    Signing(SignError),
    /// A request's signature was refused (or was not expected).
    Signature(VerifyError),
    /// The `ttl` is no Go duration; holds the parser's message.
    InvalidTtl(String),
    /// The unit cannot start again; holds its state name.
    AlreadyFinal(String),
    /// A remote-only operation on a unit that runs here.
    NotRemote,
    CreateDir(io::Error),
    WriteStatus(io::Error),
    RemoveDir(io::Error),
    /// The unit's secret params could not be sealed or unsealed.
    Secrets(String),
    /// The command runner process could not be started.
    Launch(io::Error),
    /// The executor refused a remote unit; holds what it said.
    Refused(Box<WorkError>),
    /// The executor's answer to a submit was no unit ID; holds the line.
    BadSubmitReply(String),
    /// The target node is no name any node can have; holds why.
    BadNode(String),
    /// A Kubernetes unit's params or config were refused; Go's text.
    Kube(String),
    /// Last resort: another node's error text in a form not listed above.
    Remote(String),
}

/// Makes the variant of a text that ends in a free argument.
type WithArg = fn(String) -> WorkError;

const UNKNOWN_UNIT: &str = "unknown work unit ";
const UNKNOWN_TYPE: &str = "unknown work type ";
const TTL_FOR_LOCAL: &str = "ttl option is intended for remote work only";
const PARAMS_NOT_ALLOWED: &str = "extra params provided but not allowed";
const UNKNOWN_TLS: &str = "unknown TLS config ";
const SECRETS_WITHOUT_TLS: &str = "cannot send secrets over a non-TLS connection";
const INVALID_TTL: &str = "invalid ttl: ";
const ALREADY_FINAL: &str = "unit is already ";
const NOT_REMOTE: &str = "not a remote unit";
const REFUSED: &str = "remote error: ";
const BAD_SUBMIT_REPLY: &str = "could not parse response: ";

impl fmt::Display for WorkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkError::UnknownUnit(id) => write!(f, "{UNKNOWN_UNIT}{id}"),
            WorkError::UnknownType(t) => write!(f, "{UNKNOWN_TYPE}{t}"),
            WorkError::TtlForLocal => f.write_str(TTL_FOR_LOCAL),
            WorkError::ParamsNotAllowed => f.write_str(PARAMS_NOT_ALLOWED),
            WorkError::UnknownTlsConfig(name) => write!(f, "{UNKNOWN_TLS}{name}"),
            WorkError::SecretsWithoutTls => f.write_str(SECRETS_WITHOUT_TLS),
            WorkError::Signing(e) => write!(f, "{e}"),
            WorkError::Signature(e) => write!(f, "{e}"),
            WorkError::InvalidTtl(e) => write!(f, "{INVALID_TTL}{e}"),
            WorkError::AlreadyFinal(state) => write!(f, "{ALREADY_FINAL}{state}"),
            WorkError::NotRemote => f.write_str(NOT_REMOTE),
            WorkError::CreateDir(e) => write!(f, "cannot create unit directory: {e}"),
            WorkError::WriteStatus(e) => write!(f, "cannot write unit status: {e}"),
            WorkError::RemoveDir(e) => write!(f, "cannot remove unit directory: {e}"),
            WorkError::Secrets(e) => write!(f, "cannot keep the unit's secrets: {e}"),
            WorkError::Launch(e) => write!(f, "{e}"),
            WorkError::Kube(e) => f.write_str(e),
            WorkError::Refused(e) => write!(f, "{REFUSED}{e}"),
            WorkError::BadSubmitReply(line) => write!(f, "{BAD_SUBMIT_REPLY}{line}"),
            WorkError::BadNode(why) => write!(f, "invalid node name: {why}"),
            WorkError::Remote(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for WorkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkError::CreateDir(e)
            | WorkError::WriteStatus(e)
            | WorkError::RemoveDir(e)
            | WorkError::Launch(e) => Some(e),
            WorkError::Refused(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl WorkError {
    /// Reads the text of another node's `ERROR:` reply back into the
    /// variant that printed it. I/O failures carry no recoverable
    /// `io::Error`, so they, like any unknown text, become `Remote`.
    pub fn from_remote(text: &str) -> WorkError {
        let with_arg: [(&str, WithArg); 7] = [
            (UNKNOWN_UNIT, WorkError::UnknownUnit),
            (UNKNOWN_TYPE, WorkError::UnknownType),
            (UNKNOWN_TLS, WorkError::UnknownTlsConfig),
            (INVALID_TTL, WorkError::InvalidTtl),
            (ALREADY_FINAL, WorkError::AlreadyFinal),
            (REFUSED, |e| {
                WorkError::Refused(Box::new(WorkError::from_remote(&e)))
            }),
            (BAD_SUBMIT_REPLY, WorkError::BadSubmitReply),
        ];
        let fixed = [
            (TTL_FOR_LOCAL, WorkError::TtlForLocal),
            (PARAMS_NOT_ALLOWED, WorkError::ParamsNotAllowed),
            (SECRETS_WITHOUT_TLS, WorkError::SecretsWithoutTls),
            (NOT_REMOTE, WorkError::NotRemote),
        ];
        if let Some((_, e)) = fixed.into_iter().find(|(t, _)| *t == text) {
            return e;
        }
        if let Some(e) = VerifyError::from_text(text) {
            return WorkError::Signature(e);
        }
        if let Some(e) = SignError::from_text(text) {
            return WorkError::Signing(e);
        }
        for (prefix, make) in with_arg {
            match text.strip_prefix(prefix) {
                Some(arg) if !arg.is_empty() => return make(arg.to_string()),
                _ => {}
            }
        }
        WorkError::Remote(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form a peer can report reads back into the variant that
    /// printed it, and prints the same text again.
    #[test]
    fn remote_errors_read_back_into_their_variant() {
        let known = [
            WorkError::UnknownUnit("j4bLSmVp".into()),
            WorkError::UnknownType("nope".into()),
            WorkError::TtlForLocal,
            WorkError::ParamsNotAllowed,
            WorkError::UnknownTlsConfig("tlsc".into()),
            WorkError::SecretsWithoutTls,
            WorkError::Signing(SignError::NoKey),
            WorkError::Signature(VerifyError::NotExpected),
            WorkError::Signature(VerifyError::Invalid("token is expired by 1s".into())),
            WorkError::Signature(VerifyError::Audience),
            WorkError::InvalidTtl("time: invalid duration \"x\"".into()),
            WorkError::AlreadyFinal("Failed".into()),
            WorkError::NotRemote,
            WorkError::Refused(Box::new(WorkError::UnknownType("nope".into()))),
            WorkError::BadSubmitReply("ERROR: unknown work type nope".into()),
        ];
        for e in known {
            let text = e.to_string();
            let back = WorkError::from_remote(&text);
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{text}"
            );
            assert_eq!(back.to_string(), text);
        }
    }

    #[test]
    fn go_texts() {
        // The Go executor's replies (tests/vectors control transcripts).
        assert!(matches!(
            WorkError::from_remote("unknown work unit nosuchunit"),
            WorkError::UnknownUnit(id) if id == "nosuchunit"
        ));
        assert!(matches!(
            WorkError::from_remote("unknown work type nope"),
            WorkError::UnknownType(t) if t == "nope"
        ));
        assert!(matches!(
            WorkError::from_remote("work type did not expect a signature"),
            WorkError::Signature(VerifyError::NotExpected)
        ));
        assert!(matches!(
            WorkError::from_remote("unknown work unit "),
            WorkError::Remote(_)
        ));
        let io = WorkError::CreateDir(io::Error::other("disk full"));
        assert_eq!(io.to_string(), "cannot create unit directory: disk full");
        assert!(matches!(
            WorkError::from_remote(&io.to_string()),
            WorkError::Remote(_)
        ));
    }
}
