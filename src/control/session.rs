//! One control-service client: greeting, then one reply per command line.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};

use log::{debug, error, warn};

use std::sync::Arc;

use super::clients::Permit;
use super::command::{self, Command, WorkCommand};
use super::reply::{self, HostInfo};
use crate::netceptor::Netceptor;
use crate::netceptor::node::MAX_FORWARDING_HOPS;
use crate::netceptor::ping;
use crate::services::{OnRemoteEof, Socket, bridge};
use crate::stream::{self, DIAL_TIMEOUT};
use crate::work::{Started, Workceptor, trailer};

/// Longest command line accepted; a longer one ends the session.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// A results stream gathers writes up to this much: the header, short
/// output and the stream's end. A full chunk of output skips it.
const RESULTS_BUFFER: usize = 4096;

/// Shared by every session of one control service.
pub struct Context {
    pub net: Netceptor,
    pub host: HostInfo,
    pub work: Arc<Workceptor>,
    /// The node's TLS sections, for `connect NODE SERVICE TLSCLIENT`.
    pub tls: Arc<crate::tls::Sections>,
    pub reload: super::reload::Reloader,
}

/// Who is asking, as far as work signatures go (docs/work.md §8): the
/// signature a JSON command carried, and whether the client is on the
/// Unix socket (never checked).
struct Caller {
    signature: String,
    unix: bool,
}

/// Whether a session's greeting is still to be written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// The accept thread wrote it ([`greet`]): the client reads it while
    /// the session's thread wakes, instead of after.
    Sent,
    Due,
}

/// The line a session starts with.
fn greeting(ctx: &Context) -> String {
    format!("Receptor Control, node {}\n", ctx.net.node_id())
}

/// Writes the greeting a session starts with.
pub fn greet<W: Write>(ctx: &Context, out: &mut W) -> std::io::Result<()> {
    out.write_all(greeting(ctx).as_bytes())?;
    out.flush()
}

/// Serves a client until it hangs up. `peer` names it in logs; `unix`
/// says it came through the Unix socket.
pub fn serve<S: Socket>(ctx: &Context, stream: S, peer: &str, unix: bool) {
    serve_with(ctx, stream, peer, unix, None, Greeting::Due);
}

/// [`serve`] for a client holding a slot, marked idle while it waits for
/// a command (so a newcomer may take its place) and busy while one runs;
/// `greeting` says whether the accept thread greeted it already.
pub fn serve_with<S: Socket>(
    ctx: &Context,
    stream: S,
    peer: &str,
    unix: bool,
    slot: Option<&Permit>,
    greeting: Greeting,
) {
    let idle = |idle: bool| {
        if let Some(p) = slot {
            p.set_idle(idle, std::time::Instant::now());
        }
    };
    debug!("Client connected to control service {peer}");
    let mut conn = BufReader::new(stream);
    // One of our nodes that sent its submit without waiting for the
    // greeting gets it in front of the ID line: one packet fewer. It then
    // comes once the unit is allocated, which our controller waits for up
    // to its 5 s greeting timeout (the ID line alone gets 3 s after it).
    let mut held = None;
    let greeted = match greeting {
        Greeting::Sent => Ok(()),
        Greeting::Due if conn.get_ref().sent_ahead() => {
            held = Some(self::greeting(ctx));
            Ok(())
        }
        Greeting::Due => greet(ctx, conn.get_mut()),
    };
    if greeted.is_ok() {
        loop {
            idle(true);
            let Some(line) = next_line(&mut conn) else {
                break;
            };
            idle(false);
            if line.is_empty() {
                continue;
            }
            let caller = Caller {
                signature: command::signature(&line),
                unix,
            };
            // A started unit's follow-up (its monitor), held until the
            // reply is written.
            let mut started = None;
            let parsed = command::parse(&line);
            // A held greeting goes in front of the reply (a submit's ID
            // line, a results stream's header); a bridge needs it first.
            if matches!(parsed, Ok(Command::Connect { .. }))
                && let Some(text) = held.take()
                && write(&mut conn, &text).is_err()
            {
                break;
            }
            let (reply, submitted) = match parsed {
                Ok(Command::Connect { node, service, tls }) => {
                    // The connection now belongs to the bridge.
                    return connect(ctx, conn, &node, &service, tls.as_deref());
                }
                Ok(Command::Work(WorkCommand::Submit(req))) => {
                    let reply =
                        submit(ctx, &mut conn, &mut held, &req, &caller).map(|(unit, s)| {
                            let text = reply::submitted(s.completion, &unit);
                            started = Some(s);
                            text
                        });
                    (reply, true)
                }
                Ok(Command::Work(WorkCommand::Results {
                    unit,
                    start,
                    framed,
                })) => {
                    // The stream ends with the connection.
                    let greeting = held.take().unwrap_or_default();
                    return results(ctx, conn, &greeting, &unit, (start, framed), &caller);
                }
                Ok(cmd) => (run(ctx, cmd, &caller), false),
                Err(e) => (Err(e), false),
            };
            let last = ends_session(conn.get_ref().pipelines_submits(), submitted, &reply);
            let written = write(
                &mut conn,
                &(held.take().unwrap_or_default() + &render(reply)),
            );
            drop(started);
            if written.is_err() || last {
                break;
            }
        }
    }
    debug!("Client disconnected from control service {peer}");
}

/// Whether the session ends after `reply`. One of our nodes (`pipelined`)
/// sends a submit's stdin right behind the request, unasked: after a
/// submit (refused, or run with the stream at its end) and after any
/// line answered `ERROR` (a submit that did not parse among them), what
/// follows may be stdin, never to be read as commands.
fn ends_session(pipelined: bool, submitted: bool, reply: &Result<String, String>) -> bool {
    pipelined && (submitted || reply.is_err())
}

fn render(reply: Result<String, String>) -> String {
    match reply {
        Ok(body) => body + "\n",
        Err(e) => {
            error!("Control service: {e}");
            format!("ERROR: {e}\n")
        }
    }
}

fn run(ctx: &Context, cmd: Command, caller: &Caller) -> Result<String, String> {
    match cmd {
        Command::Status { fields } => {
            let st = ctx.net.status().ok_or("node is shutting down")?;
            Ok(reply::status(&st, &ctx.host, fields.as_deref()))
        }
        Command::Ping { target } => {
            let probe = ping::ping(&ctx.net, &target, MAX_FORWARDING_HOPS, ping::PING_TIMEOUT);
            Ok(reply::ping(&probe))
        }
        Command::Traceroute { target } => {
            Ok(reply::traceroute(&ping::traceroute(&ctx.net, &target)))
        }
        Command::Work(w) => work(ctx, w, caller),
        Command::Reload => {
            let result = ctx.reload.reload();
            if let Err(e) = &result {
                warn!("Reload not successful: {e}");
            }
            Ok(super::reload::reply(&result))
        }
        Command::Connect { .. } => Err("connect is handled by the session".into()),
    }
}

fn work(ctx: &Context, cmd: WorkCommand, caller: &Caller) -> Result<String, String> {
    let w = &ctx.work;
    let signed = |id: &str| {
        let unit = w.find(id)?;
        w.check_unit_signature(&unit, &caller.signature, caller.unix)
    };
    let reply = match cmd {
        WorkCommand::List(unit) => w.list_reply(unit.as_deref()),
        WorkCommand::Status(unit) => w.status_reply(&unit),
        WorkCommand::Cancel(unit) => {
            signed(&unit).and_then(|()| w.cancel(&unit).map(|c| reply::cancelled(c, &unit)))
        }
        WorkCommand::Release { unit, force } => {
            signed(&unit).and_then(|()| w.release(&unit, force).map(|c| reply::released(c, &unit)))
        }
        WorkCommand::Submit(_) | WorkCommand::Results { .. } => {
            return Err("handled by the session".into());
        }
    };
    reply.map_err(|e| e.to_string())
}

/// `work submit`: the ID line, then stdin until the client half-closes,
/// then the unit starts; its ID and how it started make the result line.
fn submit<S: Socket>(
    ctx: &Context,
    conn: &mut BufReader<S>,
    held: &mut Option<String>,
    req: &crate::work::SubmitRequest,
    caller: &Caller,
) -> Result<(String, Started), String> {
    ctx.work
        .check_submit_signature(req, &caller.signature, caller.unix)
        .map_err(|e| e.to_string())?;
    let unit = ctx.work.allocate(req).map_err(|e| e.to_string())?;
    let mut stdin = ctx.work.open_stdin(&unit).map_err(|e| e.to_string())?;
    let line = format!(
        "{}Work unit created with ID {}. Send stdin data and EOF.\n",
        held.take().unwrap_or_default(),
        unit.id
    );
    if let Err(e) = write(conn, &line) {
        // Gone before it heard of the unit, the client may submit again:
        // this one must not stay Pending.
        ctx.work.input_failed(&unit, &e);
        return Err(e.to_string());
    }
    if let Err(e) = std::io::copy(conn, &mut stdin).and_then(|_| stdin.sync_all()) {
        ctx.work.input_failed(&unit, &e);
        return Err(e.to_string());
    }
    drop(stdin);
    let started = ctx.work.start_unit(&unit).map_err(|e| e.to_string())?;
    Ok((unit.id.clone(), started))
}

/// `work results` from `start`, behind a `greeting` still to write;
/// `framed`, with the status at the end once the unit is final
/// (`work::trailer`).
fn results<S: Socket>(
    ctx: &Context,
    mut conn: BufReader<S>,
    greeting: &str,
    id: &str,
    (start, framed): (u64, bool),
    caller: &Caller,
) {
    let found = ctx.work.find(id).and_then(|unit| {
        ctx.work
            .check_unit_signature(&unit, &caller.signature, caller.unix)
            .map(|()| unit)
    });
    let unit = match found {
        Ok(u) => u,
        Err(e) => {
            let _ = write(
                &mut conn,
                &(greeting.to_string() + &render(Err(e.to_string()))),
            );
            return;
        }
    };
    let out = conn.get_mut();
    let client = out.try_clone();
    let gone = || client.as_ref().is_ok_and(Socket::peer_gone);
    // The header, short output and the end go out together when the unit
    // is done already: one packet on a mesh stream.
    let mut buffered = std::io::BufWriter::with_capacity(RESULTS_BUFFER, &mut *out);
    let suffix = if framed { trailer::HEADER_SUFFIX } else { "" };
    let header = format!("{greeting}Streaming results for work unit {id}{suffix}\n");
    let streamed = buffered
        .write_all(header.as_bytes())
        .and_then(|()| unit.stream_results(start, framed, &mut buffered, &gone));
    let mut last = buffered.into_parts().1.unwrap_or_default();
    match streamed {
        Err(e) => debug!("Results stream for {id} ended: {e}"),
        // Only a final status is worth sending: the controller stops
        // asking once it has one.
        Ok(()) if framed && unit.status().is_final() => {
            if let Ok(status) = ctx.work.status_reply(id) {
                last.extend_from_slice(&trailer::end(&status));
            }
        }
        Ok(()) => {}
    }
    let _ = out.finish(&last);
    let _ = out.shutdown(std::net::Shutdown::Read);
}

/// Dials the service and, once it answers, bridges the client to it.
fn connect<S: Socket>(
    ctx: &Context,
    mut conn: BufReader<S>,
    node: &str,
    service: &str,
    tls: Option<&str>,
) {
    let dialed = match tls.map(|name| ctx.tls.client(name)).transpose() {
        Err(unknown) => Err(unknown.to_string()),
        Ok(client) => stream::dial_tls(&ctx.net, node, service, DIAL_TIMEOUT, client.as_deref())
            .map_err(String::from),
    };
    let remote = match dialed {
        Ok(s) => s,
        Err(e) => {
            let _ = write(&mut conn, &render(Err(e)));
            return;
        }
    };
    if write(&mut conn, "Connecting\n").is_err() {
        return;
    }
    let pending = conn.buffer().to_vec();
    bridge(conn.into_inner(), &pending, remote, OnRemoteEof::Close);
}

/// Reads up to a newline, dropping `\r`. A partial line before EOF still
/// counts; `None` at EOF, on error, or for an over-long line.
fn next_line<R: BufRead>(r: &mut R) -> Option<String> {
    let mut raw = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut raw);
    match n {
        Ok(0) => None,
        Ok(_) if raw.len() > MAX_LINE => {
            error!("Control service: command line longer than {MAX_LINE} bytes");
            None
        }
        Ok(_) => {
            raw.retain(|&b| b != b'\r' && b != b'\n');
            Some(String::from_utf8_lossy(&raw).into_owned())
        }
        Err(e) => {
            if e.kind() != ErrorKind::ConnectionReset {
                debug!("Could not read in control service: {e}");
            }
            None
        }
    }
}

fn write<S: Write>(conn: &mut BufReader<S>, text: &str) -> std::io::Result<()> {
    let s = conn.get_mut();
    s.write_all(text.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_drop_cr_and_keep_a_final_partial_line() {
        let mut r = std::io::Cursor::new(b"a\r\nb\rc\n\npartial".to_vec());
        let lines: Vec<String> = std::iter::from_fn(|| next_line(&mut r)).collect();
        assert_eq!(lines, ["a", "bc", "", "partial"]);
    }

    #[test]
    fn on_a_pipelining_stream_any_error_or_submit_ends_the_session() {
        let ok = Ok("{}".to_string());
        let error = Err("could not parse".to_string());
        assert!(ends_session(true, false, &error));
        assert!(ends_session(true, true, &ok));
        assert!(ends_session(true, true, &error));
        assert!(!ends_session(true, false, &ok));
        // receptorctl and Go nodes keep their session after an error.
        assert!(!ends_session(false, false, &error));
        assert!(!ends_session(false, true, &ok));
    }

    #[test]
    fn over_long_line_ends_the_session() {
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.push(b'\n');
        let mut r = std::io::Cursor::new(big);
        assert_eq!(next_line(&mut r), None);
    }
}
