//! The `reload` command's side of a reload: asking the daemon, which owns
//! the backends, to re-read the configuration, and the reply receptorctl
//! reads (`{"Success":true}` or an `Error` ending in `ERRORCODE n`, which
//! it turns into its exit status).

use std::fmt;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::config::reload::NotReloadable;

/// Why a reload did not (fully) apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The node was started without a config file (Go's text).
    NoConfigFile,
    /// The files do not parse, or a backend could not start. Nothing is
    /// changed when the files do not parse.
    Failed(String),
    /// A section a reload cannot apply was changed; nothing is changed.
    NotReloadable(NotReloadable),
}

impl ReloadError {
    /// receptorctl exits with this code.
    pub fn code(&self) -> u8 {
        match self {
            ReloadError::NotReloadable(_) => 3,
            ReloadError::NoConfigFile | ReloadError::Failed(_) => 4,
        }
    }
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoConfigFile => {
                f.write_str("no configuration file was provided, reload function not set")
            }
            ReloadError::Failed(why) => f.write_str(why),
            ReloadError::NotReloadable(n) => n.fmt(f),
        }
    }
}

impl std::error::Error for ReloadError {}

/// One request: the daemon answers on `reply`.
pub struct ReloadRequest {
    pub reply: Sender<Result<(), ReloadError>>,
}

/// A cheap, cloneable way to ask for a reload.
#[derive(Clone)]
pub struct Reloader(Sender<ReloadRequest>);

impl Reloader {
    /// The handle, and the end its owner serves requests from.
    pub fn new() -> (Reloader, Receiver<ReloadRequest>) {
        let (tx, rx) = bounded(1);
        (Reloader(tx), rx)
    }

    /// Asks for a reload and waits for the outcome.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let (reply, answer) = bounded(1);
        let stopped = || ReloadError::Failed("the node is shutting down".into());
        self.0
            .send(ReloadRequest { reply })
            .map_err(|_| stopped())?;
        answer.recv().unwrap_or_else(|_| Err(stopped()))
    }
}

/// The reply line (without its newline), keys sorted as Go writes them.
pub fn reply(result: &Result<(), ReloadError>) -> String {
    match result {
        Ok(()) => serde_json::json!({"Success": true}).to_string(),
        Err(e) => serde_json::json!({
            "Error": format!("{e} ERRORCODE {}", e.code()),
            "Success": false,
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_receptorctls_error_codes() {
        assert_eq!(reply(&Ok(())), r#"{"Success":true}"#);
        assert_eq!(
            reply(&Err(ReloadError::NoConfigFile)),
            r#"{"Error":"no configuration file was provided, reload function not set ERRORCODE 4","Success":false}"#
        );
        let refused = ReloadError::NotReloadable(NotReloadable {
            action: "work-command".into(),
            removed: true,
        });
        assert!(reply(&Err(refused)).ends_with(r#"ERRORCODE 3","Success":false}"#));
    }

    #[test]
    fn a_request_is_answered_by_the_owner() {
        let (reloader, requests) = Reloader::new();
        let owner = std::thread::spawn(move || {
            let req = requests.recv().unwrap();
            req.reply
                .send(Err(ReloadError::Failed("bad".into())))
                .unwrap();
        });
        assert_eq!(reloader.reload(), Err(ReloadError::Failed("bad".into())));
        owner.join().unwrap();
        // With the owner gone, asking fails instead of hanging.
        assert!(matches!(reloader.reload(), Err(ReloadError::Failed(_))));
    }
}
