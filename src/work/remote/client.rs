//! A typed client for another node's control service, reached as the mesh
//! service `control`: the calls a controller makes for its remote units,
//! each reply parsed here and nowhere else (docs/control.md, docs/work.md §6).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::debug;

use crate::netceptor::Netceptor;
use crate::stream::{SharedConns, Stream};
use crate::tls::ClientTls;
use crate::work::signing::{Keys, SignError};
use crate::work::state::{RemoteExtra, Status};
use crate::work::{WorkError, trailer};

const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// A status reply slower than this means the path is gone: reconnect.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Submit results, cancels and releases may wait on the executor's disk.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Stdin up to this size is read whole and sent with the FIN.
const SHORT_STDIN: u64 = 16 * 1024;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// No answer: no route, a broken or silent stream, a stranger's
    /// greeting. Worth trying again later.
    Link(String),
    /// The node answered `ERROR: …`.
    Refused(WorkError),
    /// The node answered something the call does not expect; holds the
    /// line.
    Unexpected(String),
    /// The request could not be signed.
    Sign(SignError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Link(e) => f.write_str(e),
            ClientError::Refused(e) => write!(f, "{e}"),
            ClientError::Unexpected(line) => write!(f, "could not parse response: {line}"),
            ClientError::Sign(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Link(e.to_string())
    }
}

/// One connection to a node's control service. Calls go one after
/// another on it; `submit` and `results` use it up.
pub struct ControlClient {
    reader: BufReader<Stream>,
    stream: Stream,
    /// The node whose greeting is still to be read, before the first
    /// reply: left unread on a stream to one of our nodes, so a submit
    /// need not wait for it.
    greeting: Option<String>,
    /// Signs every request but `status` (docs/work.md §8), each with a
    /// token of its own for the node dialed.
    signer: Option<(Arc<Keys>, String)>,
}

impl ControlClient {
    /// Opens the control service of `node`, over TLS with `tls` (its name
    /// and section) when the unit was submitted with a TLS client, and
    /// checks that the greeting names `node`. A connection kept in
    /// `shared` carries the stream if there is one; if it no longer
    /// answers, a new dial replaces it, so it costs a dial and never a
    /// failed step.
    pub fn connect(
        net: &Netceptor,
        shared: &SharedConns,
        node: &str,
        tls: Option<(&str, &Arc<ClientTls>)>,
    ) -> Result<ControlClient, ClientError> {
        let to = (node, "control");
        if let Some(stream) = shared.reuse(net, to, tls, DIAL_TIMEOUT) {
            match Self::greeted(stream.clone(), node) {
                Err(ClientError::Link(e)) => {
                    debug!("Shared control connection to {node} failed: {e}");
                    shared.forget(&stream);
                }
                done => return done,
            }
        }
        let stream = shared
            .dial(net, to, tls, DIAL_TIMEOUT)
            .map_err(|e| ClientError::Link(e.to_string()))?;
        Self::greeted(stream, node)
    }

    /// Opens the control service of `node` as [`connect`](Self::connect)
    /// does, for a submit: a stream to one of our nodes (one on a
    /// many-stream connection) is returned ungreeted, so the submit goes
    /// out at once; to a Go node, only once it greeted. `Reused` says the
    /// stream came from a kept connection, which may have died unseen.
    pub fn open(
        net: &Netceptor,
        shared: &SharedConns,
        node: &str,
        tls: Option<(&str, &Arc<ClientTls>)>,
    ) -> Result<(ControlClient, Reused), ClientError> {
        let to = (node, "control");
        if let Some(stream) = shared.reuse(net, to, tls, DIAL_TIMEOUT) {
            return Ok((Self::ungreeted(stream, node), Reused(true)));
        }
        let stream = shared
            .dial(net, to, tls, DIAL_TIMEOUT)
            .map_err(|e| ClientError::Link(e.to_string()))?;
        let client = if stream.carries_many() {
            Self::ungreeted(stream, node)
        } else {
            Self::greeted(stream, node)?
        };
        Ok((client, Reused(false)))
    }

    /// A client on `stream` once `node` greeted on it.
    fn greeted(stream: Stream, node: &str) -> Result<ControlClient, ClientError> {
        let mut client = Self::ungreeted(stream, node);
        client.read_greeting()?;
        Ok(client)
    }

    /// A client on `stream` that reads `node`'s greeting before its first
    /// reply.
    fn ungreeted(stream: Stream, node: &str) -> ControlClient {
        stream.set_read_timeout(Some(GREETING_TIMEOUT));
        ControlClient {
            reader: BufReader::new(stream.clone()),
            stream,
            greeting: Some(node.to_string()),
            signer: None,
        }
    }

    /// Whether the node's greeting is still to come: the stream runs to
    /// one of our nodes and nothing was read from it yet.
    fn ungreeted_yet(&self) -> bool {
        self.greeting.is_some()
    }

    /// The kept connection under this client no longer answers: it is not
    /// used again.
    pub fn forget_connection(&self, shared: &SharedConns) {
        shared.forget(&self.stream);
    }

    /// [`forget_connection`](Self::forget_connection), for after this
    /// client is used up (by [`results`](Self::results)).
    pub fn forgetter(&self) -> impl FnOnce(&SharedConns) + use<> {
        let stream = self.stream.clone();
        move |shared| shared.forget(&stream)
    }

    /// From now on, requests carry a `signature` made with `keys` for
    /// `node` (the unit's RemoteNode, as Go's audience), or none.
    pub fn sign_with(&mut self, signer: Option<(Arc<Keys>, &str)>) {
        self.signer = signer.map(|(keys, node)| (keys, node.to_string()));
    }

    /// Adds a fresh signature to `req` when this client signs.
    fn sign(
        &self,
        req: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ClientError> {
        if let Some((keys, node)) = &self.signer {
            let token = keys
                .sign(node, SystemTime::now())
                .map_err(ClientError::Sign)?;
            req.insert("signature".into(), token.into());
        }
        Ok(())
    }

    /// Creates the unit `r` describes on the node and sends it `stdin`,
    /// half-closing; the unit then starts there. Like Go's controller,
    /// any reply to the request without an ID, an `ERROR:` one too, is
    /// `Unexpected`; the result line's `ERROR:` is `Refused`.
    ///
    /// To one of our nodes (greeting unread) the request, stdin and
    /// half-close go out at once, and the greeting, ID line and result
    /// are read after: one turn instead of three. Our executor ends the
    /// session after refusing a submit there, so the stdin behind a
    /// refused request is never read as commands. To a Go node, each
    /// reply is awaited before the next write, as receptorctl does.
    ///
    /// An executor that fails while taking stdin (a full disk) replies
    /// `ERROR: …` and stops the stream, failing our writes: the result
    /// line is read all the same, and its answer wins over the write
    /// error, so a unit that failed there is not submitted again.
    pub fn submit(
        &mut self,
        r: &RemoteExtra,
        secrets: &BTreeMap<String, String>,
        stdin: &mut dyn Read,
    ) -> Submitted {
        let request = match self.submit_line(r, secrets) {
            Ok(line) => line,
            Err(e) => return Submitted::no_id(e),
        };
        if self.ungreeted_yet() {
            // A refusal stops the stream, failing these writes; its reply
            // still comes and says why.
            let sent = self.send_rest(format!("{request}\n").into_bytes(), stdin);
            if let Err((e, gone)) = self.first_bytes() {
                return Submitted {
                    unheard: gone,
                    ..Submitted::no_id(e)
                };
            }
            let id = match self.line().and_then(id_reply) {
                Ok(id) => id,
                Err(e) => return Submitted::no_id(e),
            };
            let started = self.result(sent);
            return Submitted {
                id: Some(id),
                started,
                unheard: false,
            };
        }
        let id = match self.request(&request).and_then(id_reply) {
            Ok(id) => id,
            Err(e) => return Submitted::no_id(e),
        };
        let sent = self.send_rest(Vec::new(), stdin);
        let started = self.result(sent);
        Submitted {
            id: Some(id),
            started,
            unheard: false,
        }
    }

    /// The JSON line of a submit.
    fn submit_line(
        &self,
        r: &RemoteExtra,
        secrets: &BTreeMap<String, String>,
    ) -> Result<String, ClientError> {
        let mut req = serde_json::Map::new();
        for (k, v) in r.remote_params.iter().chain(secrets) {
            req.insert(k.clone(), v.clone().into());
        }
        for (k, v) in [
            ("command", "work"),
            ("subcommand", "submit"),
            ("node", &r.remote_node),
            ("worktype", &r.remote_work_type),
            ("tlsclient", &r.tls_client),
        ] {
            req.insert(k.into(), v.into());
        }
        self.sign(&mut req)?;
        Ok(serde_json::Value::Object(req).to_string())
    }

    /// Waits for the node's first bytes. When none come, the error and
    /// whether the connection was found gone (see [`connection_gone`]).
    fn first_bytes(&mut self) -> Result<(), (ClientError, bool)> {
        match self.reader.fill_buf() {
            Ok([]) => Err((ClientError::Link("connection closed".into()), true)),
            Ok(_) => Ok(()),
            Err(e) => {
                let gone = connection_gone(&e);
                Err((e.into(), gone))
            }
        }
    }

    /// Sends `head`, then the unit's stdin, and half-closes. Short stdin
    /// goes out with `head` and the FIN in one step: one packet.
    fn send_rest(&self, mut head: Vec<u8>, stdin: &mut dyn Read) -> Result<(), ClientError> {
        let short = stdin.take(SHORT_STDIN).read_to_end(&mut head)? < SHORT_STDIN as usize;
        if short {
            return Ok(self.stream.write_and_shutdown(&head)?);
        }
        (&self.stream).write_all(&head)?;
        io::copy(stdin, &mut &self.stream)?;
        self.stream.shutdown_write();
        Ok(())
    }

    /// The result line of a submit, once the unit started (or not), after
    /// stdin was `sent`. Had sending failed, the executor may have stopped
    /// the stream with its answer already under way: it is awaited only
    /// as long as a reply.
    fn result(&mut self, sent: Result<(), ClientError>) -> Result<(), ClientError> {
        let wait = match sent {
            Ok(()) => ACTION_TIMEOUT,
            Err(_) => REPLY_TIMEOUT,
        };
        self.stream.set_read_timeout(Some(wait));
        let answer = self
            .line()
            .and_then(|line| refusal(&line).map_or(Ok(()), Err));
        answer_over_write(sent, answer)
    }

    /// The unit's status there.
    pub fn status(&mut self, unit_id: &str) -> Result<Status, ClientError> {
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT));
        let line = self.request(&format!("work status {unit_id}"))?;
        if let Some(e) = refusal(&line) {
            return Err(e);
        }
        serde_json::from_str(&line).map_err(|_| ClientError::Unexpected(line))
    }

    /// The unit's stdout from `start` on, as the node streams it. A read
    /// silent for `stall` fails with `TimedOut`; the stream ends with the
    /// unit, and from one of our nodes with its final status
    /// ([`trailer::Reader::status`]).
    pub fn results(
        mut self,
        unit_id: &str,
        start: u64,
        stall: Duration,
    ) -> Result<Results, ClientError> {
        let mut req = serde_json::Map::new();
        req.insert("command".into(), "work".into());
        req.insert("subcommand".into(), "results".into());
        req.insert("unitid".into(), unit_id.into());
        req.insert("startpos".into(), start.into());
        let ours = self.stream.carries_many();
        if ours {
            req.insert(trailer::ASK.into(), true.into());
        }
        self.sign(&mut req)?;
        let request = format!("{}\n", serde_json::Value::Object(req));
        // Our executors read nothing after the request: the FIN goes with
        // it. Go's get it once they answered, as Go's controller sends it.
        if ours {
            self.stream.write_and_shutdown(request.as_bytes())?;
        } else {
            (&self.stream).write_all(request.as_bytes())?;
        }
        let line = self.line()?;
        if let Some(e) = refusal(&line) {
            return Err(e);
        }
        if !line.contains("Streaming results") {
            return Err(ClientError::Unexpected(line));
        }
        if !ours {
            self.stream.shutdown_write();
        }
        self.stream.set_read_timeout(Some(stall));
        // Output may already sit in the buffer behind the reply line.
        Ok(match trailer::framed_reply(&line) {
            true => trailer::Reader::framed(self.reader),
            false => trailer::Reader::plain(self.reader),
        })
    }

    pub fn cancel(&mut self, unit_id: &str) -> Result<(), ClientError> {
        self.unit_command("cancel", unit_id)
    }

    pub fn release(&mut self, unit_id: &str) -> Result<(), ClientError> {
        self.unit_command("release", unit_id)
    }

    fn unit_command(&mut self, subcommand: &str, unit_id: &str) -> Result<(), ClientError> {
        self.stream.set_read_timeout(Some(ACTION_TIMEOUT));
        let mut req = serde_json::Map::new();
        req.insert("command".into(), "work".into());
        req.insert("subcommand".into(), subcommand.into());
        req.insert("unitid".into(), unit_id.into());
        self.sign(&mut req)?;
        let line = self.request(&serde_json::Value::Object(req).to_string())?;
        refusal(&line).map_or(Ok(()), Err)
    }

    fn request(&mut self, line: &str) -> Result<String, ClientError> {
        self.write_line(line)?;
        self.line()
    }

    fn write_line(&self, line: &str) -> Result<(), ClientError> {
        (&self.stream).write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    /// The next reply line, after the greeting if that is still unread.
    fn line(&mut self) -> Result<String, ClientError> {
        self.read_greeting()?;
        self.read_line()
    }

    /// Reads the greeting if it is still unread: a stranger's fails.
    fn read_greeting(&mut self) -> Result<(), ClientError> {
        let Some(node) = self.greeting.take() else {
            return Ok(());
        };
        let greeting = self.read_line()?;
        if !greeting.contains(&node) {
            return Err(ClientError::Link(format!(
                "unexpected greeting from {node}: {greeting:?}"
            )));
        }
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT));
        Ok(())
    }

    fn read_line(&mut self) -> Result<String, ClientError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line)? {
            0 => Err(ClientError::Link("connection closed".into())),
            _ => Ok(line.trim_end().to_string()),
        }
    }
}

/// A kept session's stream tells its connection it waits idle, so the
/// connection can close once nobody uses it (`Stream::park`).
impl super::pool::Park for ControlClient {
    fn park(&self, parked: bool) {
        self.stream.park(parked);
    }
}

/// Our executors end a session on a many-stream connection after any
/// error (`control::session`); Go's keep serving it.
impl super::pool::Session for ControlClient {
    fn open_after_refusal(&self) -> bool {
        !self.stream.carries_many()
    }
}

/// A results stream: its output, then the status it may end with.
pub type Results = trailer::Reader<BufReader<Stream>>;

/// Whether a stream came from a kept connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reused(pub bool);

/// How a submit went.
#[derive(Debug)]
pub struct Submitted {
    /// The executor's unit ID, once it gave one.
    pub id: Option<String>,
    /// Whether the unit started there.
    pub started: Result<(), ClientError>,
    /// The connection was found gone before the node said a word: it
    /// may have been dead before the submit went out, the one failure
    /// after which sending it again cannot run the unit twice (as far
    /// as we can tell from here).
    pub unheard: bool,
}

impl Submitted {
    fn no_id(e: ClientError) -> Submitted {
        Submitted {
            id: None,
            started: Err(e),
            unheard: false,
        }
    }
}

/// Whether a read error says the connection is gone: closed, or lost
/// (a stateless reset, the mesh reporting it unreachable). Not a timeout,
/// which may be a slow node that has the submit and runs it.
fn connection_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::UnexpectedEof
    )
}

/// What a submit's result says: the executor's answer when it gave one,
/// else why stdin could not be sent, if it could not.
fn answer_over_write(
    sent: Result<(), ClientError>,
    answer: Result<(), ClientError>,
) -> Result<(), ClientError> {
    match (sent, answer) {
        (Err(e), Err(ClientError::Link(_))) => Err(e),
        (_, answer) => answer,
    }
}

/// The unit ID a submit's first reply carries, or that line as
/// `Unexpected`.
fn id_reply(line: String) -> Result<String, ClientError> {
    unit_id_in(&line).ok_or(ClientError::Unexpected(line))
}

/// The error an `ERROR: <text>` reply carries.
fn refusal(line: &str) -> Option<ClientError> {
    let text = line.strip_prefix("ERROR: ")?;
    Some(ClientError::Refused(WorkError::from_remote(text)))
}

/// The unit ID in `Work unit created with ID <id>. Send stdin data and EOF.`
fn unit_id_in(line: &str) -> Option<String> {
    let rest = &line[line.find("with ID ")? + "with ID ".len()..];
    let id: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty() && rest[id.len()..].starts_with('.')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_id_from_the_id_line() {
        assert_eq!(
            unit_id_in("Work unit created with ID j4bLSmVp. Send stdin data and EOF."),
            Some("j4bLSmVp".into())
        );
        assert_eq!(unit_id_in("ERROR: unknown work type nope"), None);
        assert_eq!(unit_id_in("with ID . x"), None);
    }

    #[test]
    fn a_refusal_after_a_failed_stdin_write_is_what_the_submit_reports() {
        let broken = || Err(ClientError::Link("peer stopped reading".into()));
        let full = || {
            Err(ClientError::Refused(WorkError::from_remote(
                "no space left",
            )))
        };
        assert!(matches!(
            answer_over_write(broken(), full()),
            Err(ClientError::Refused(_))
        ));
        // The executor started it although our half-close failed: it runs.
        assert!(answer_over_write(broken(), Ok(())).is_ok());
        // No answer at all: the write says why.
        let silent = Err(ClientError::Link("read timed out".into()));
        assert!(matches!(
            answer_over_write(broken(), silent),
            Err(ClientError::Link(e)) if e == "peer stopped reading"
        ));
        assert!(matches!(
            answer_over_write(Ok(()), full()),
            Err(ClientError::Refused(_))
        ));
    }

    #[test]
    fn only_a_connection_found_gone_counts_as_unheard() {
        let kind = |k| connection_gone(&io::Error::new(k, "x"));
        assert!(kind(io::ErrorKind::ConnectionAborted));
        assert!(kind(io::ErrorKind::UnexpectedEof));
        assert!(!kind(io::ErrorKind::TimedOut));
        assert!(!kind(io::ErrorKind::ConnectionReset));
        assert!(!kind(io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn error_replies_become_typed_refusals() {
        assert!(matches!(
            refusal("ERROR: unknown work unit j4bLSmVp"),
            Some(ClientError::Refused(WorkError::UnknownUnit(id))) if id == "j4bLSmVp"
        ));
        assert!(refusal(r#"{"cancelled":"j4bLSmVp"}"#).is_none());
        // What a refused submit tells the user: Go's wording.
        let e = ClientError::Unexpected("ERROR: unknown work type nope".into());
        assert_eq!(
            e.to_string(),
            "could not parse response: ERROR: unknown work type nope"
        );
    }
}
