//! The control service that receptorctl talks to (docs/control.md): a Unix
//! socket, a TCP port, and the mesh service `control`.

pub mod clients;
pub mod command;
pub mod reload;
pub mod reply;
pub mod session;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, Permissions};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info};

use crate::accept;
use crate::config::ControlServiceCfg;
use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
use crate::stream::Listener;
use crate::tls::io::TlsStream;
use crate::tls::{Sections, ServerTls};
use crate::work::Workceptor;
use clients::{Permit, Refused, Slots};
use reload::Reloader;
use session::Context;
use session::Greeting::{Due, Sent};

/// The parts of a running control service that must be undone when the
/// daemon stops: dropping it removes the Unix socket file and releases its
/// lock, so the next start finds neither. The listener threads themselves
/// serve until the process exits.
pub struct ControlService {
    _lock: Option<File>,
    socket_path: Option<PathBuf>,
}

impl Drop for ControlService {
    fn drop(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens every listener the section asks for; fails before serving if any
/// cannot be opened.
pub fn start(
    cfg: &ControlServiceCfg,
    net: &Netceptor,
    work: &Arc<Workceptor>,
    tls: &Arc<Sections>,
    reload: &Reloader,
) -> Result<ControlService, String> {
    let server = |name: &Option<String>| -> Result<Option<Arc<ServerTls>>, String> {
        name.as_deref()
            .map(|n| tls.server(n).map_err(|e| format!("control-service: {e}")))
            .transpose()
    };
    let (mesh_tls, tcp_tls) = (server(&cfg.tls)?, server(&cfg.tcp_tls)?);
    let ctx = Arc::new(Context {
        net: net.clone(),
        host: reply::HostInfo::read(),
        work: work.clone(),
        tls: tls.clone(),
        reload: reload.clone(),
    });
    // One budget for the socket and TCP listeners of this service.
    let slots = Slots::new(cfg.max_clients);
    let mut service = ControlService {
        _lock: None,
        socket_path: None,
    };
    if let Some(path) = &cfg.filename {
        let (lock, listener) = bind_unix(path, cfg.permissions)?;
        service._lock = Some(lock);
        service.socket_path = Some(path.clone());
        spawn_unix(listener, ctx.clone(), slots.clone())?;
    }
    if let Some(spec) = &cfg.tcp_listen {
        let addr = if spec.contains(':') {
            spec.clone()
        } else {
            format!("0.0.0.0:{spec}")
        };
        let listener = TcpListener::bind(&addr)
            .map_err(|e| format!("control-service tcplisten {addr}: {e}"))?;
        match tcp_tls {
            None => spawn_tcp(listener, ctx.clone(), slots.clone())?,
            Some(tls) => spawn_tcp_tls(listener, ctx.clone(), slots.clone(), &tls)?,
        }
    }
    if !cfg.service.is_empty() {
        serve_mesh(net, &cfg.service, ctx.clone(), mesh_tls.as_deref())?;
    }
    if service.socket_path.is_none() && cfg.tcp_listen.is_none() && cfg.service.is_empty() {
        return Err("control-service: no listeners specified".into());
    }
    info!("Running control service {}", cfg.service);
    Ok(service)
}

/// Takes the lock file, then replaces any stale socket at `path`.
fn bind_unix(path: &Path, permissions: u32) -> Result<(File, UnixListener), String> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| {
            format!(
                "control-service: could not open lock file {}: {e}",
                lock_path.display()
            )
        })?;
    lock.try_lock().map_err(|_| {
        format!(
            "control-service: could not acquire lock on {}: another receptor is using this socket",
            lock_path.display()
        )
    })?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "control-service: could not remove {}: {e}",
                path.display()
            ));
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        format!(
            "control-service: could not listen on {}: {e}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, Permissions::from_mode(permissions)).map_err(|e| {
        format!(
            "control-service: could not set permissions on {}: {e}",
            path.display()
        )
    })?;
    Ok((lock, listener))
}

const ACCEPT_ERROR: &str = "Error accepting control connection";

fn spawn_unix(listener: UnixListener, ctx: Arc<Context>, slots: Arc<Slots>) -> Result<(), String> {
    let greeter = ctx.clone();
    let serve = move |s, p: Permit| session::serve_with(&ctx, s, "@", true, Some(&p), Sent);
    let gate = move |s: &mut std::os::unix::net::UnixStream| admit_and_greet(&slots, &greeter, s);
    accept::spawn_gated(
        "control-unix".into(),
        listener,
        ACCEPT_ERROR.into(),
        gate,
        serve,
    )
    .map(|_| ())
    .map_err(|e| format!("cannot start control-unix thread: {e}"))
}

fn spawn_tcp(listener: TcpListener, ctx: Arc<Context>, slots: Arc<Slots>) -> Result<(), String> {
    let greeter = ctx.clone();
    let serve = move |s: std::net::TcpStream, p: Permit| {
        let peer = s.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
        session::serve_with(&ctx, s, &peer, false, Some(&p), Sent);
    };
    let gate = move |s: &mut std::net::TcpStream| admit_and_greet(&slots, &greeter, s);
    accept::spawn_gated(
        "control-tcp".into(),
        listener,
        ACCEPT_ERROR.into(),
        gate,
        serve,
    )
    .map(|_| ())
    .map_err(|e| format!("cannot start control-tcp thread: {e}"))
}

/// A slot for a new socket or TCP client, or the refusal written to it
/// (without waiting on a client that does not read).
fn admit<S: crate::services::Socket + SetWriteTimeout>(
    slots: &Arc<Slots>,
    s: &mut S,
) -> Option<Permit> {
    match slots.admit(s, std::time::Instant::now()) {
        Ok(p) => Some(p),
        Err(Refused(line)) => {
            s.set_timeout(std::time::Duration::from_millis(100));
            let _ = std::io::Write::write_all(s, line.as_bytes());
            None
        }
    }
}

/// [`admit`], then the greeting, written on the accept thread: a new
/// socket's send buffer is empty, so the write cannot wait on the client.
fn admit_and_greet<S: crate::services::Socket + SetWriteTimeout>(
    slots: &Arc<Slots>,
    ctx: &Context,
    s: &mut S,
) -> Option<Permit> {
    let permit = admit(slots, s)?;
    session::greet(ctx, s).ok().map(|()| permit)
}

/// The write timeout of the kernel sockets clients use.
trait SetWriteTimeout {
    fn set_timeout(&self, t: std::time::Duration);
}

impl SetWriteTimeout for std::net::TcpStream {
    fn set_timeout(&self, t: std::time::Duration) {
        let _ = self.set_write_timeout(Some(t));
    }
}

impl SetWriteTimeout for std::os::unix::net::UnixStream {
    fn set_timeout(&self, t: std::time::Duration) {
        let _ = self.set_write_timeout(Some(t));
    }
}

/// The TCP control port with TLS: each client's handshake runs on its own
/// thread, so a slow or silent client holds up nobody.
fn spawn_tcp_tls(
    listener: TcpListener,
    ctx: Arc<Context>,
    slots: Arc<Slots>,
    tls: &ServerTls,
) -> Result<(), String> {
    let config = Arc::new(tls.config().map_err(|e| e.to_string())?);
    let serve = move |s: std::net::TcpStream, p: Permit| {
        let peer = s.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
        let stream = rustls::ServerConnection::new(config.clone())
            .map_err(|e| e.to_string())
            .and_then(|c| TlsStream::establish(c.into(), s).map_err(|e| e.to_string()));
        match stream {
            Ok(stream) => session::serve_with(&ctx, stream, &peer, false, Some(&p), Due),
            Err(e) => error!("Control service TLS handshake with {peer} failed: {e}"),
        }
    };
    // A refusal cannot be written before the handshake: the client is
    // just closed.
    let gate = move |s: &mut std::net::TcpStream| slots.admit(s, std::time::Instant::now()).ok();
    accept::spawn_gated(
        "control-tcp".into(),
        listener,
        ACCEPT_ERROR.into(),
        gate,
        serve,
    )
    .map(|_| ())
    .map_err(|e| format!("cannot start control-tcp thread: {e}"))
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name} thread: {e}"))
}

/// Serves the control protocol on a mesh service, advertised with the
/// node's work types so other nodes can submit work here.
fn serve_mesh(
    net: &Netceptor,
    service: &str,
    ctx: Arc<Context>,
    tls: Option<&ServerTls>,
) -> Result<(), String> {
    let tags = BTreeMap::from([("type".to_string(), "Control Service".to_string())]);
    // Go advertises a TLS service as StreamTLS.
    let conn_type = if tls.is_some() { 2 } else { 1 };
    let advert = Some(Advertise { conn_type, tags });
    let listener = Listener::bind_tls(net, service, advert, tls)
        .map_err(|e| format!("control-service: {e}"))?;
    let listener = Arc::new(listener);
    spawn("control-mesh", move || accept_mesh(listener, ctx))
}

/// Accepts the streams of the mesh control service, each served on the
/// thread that accepted it once another thread took over accepting: a
/// stream's first request often came with it (a submit's, stdin and
/// all), and the session starts without a hand-off to another thread.
fn accept_mesh(listener: Arc<Listener>, ctx: Arc<Context>) {
    while let Ok(stream) = listener.accept() {
        let peer = format!("{}:{}", stream.peer_node(), stream.peer_service());
        let (next, next_ctx) = (listener.clone(), ctx.clone());
        let handed =
            crate::workers::spawn("control-mesh".into(), move || accept_mesh(next, next_ctx));
        if let Err(e) = handed {
            // Without a thread to take over, this one goes on accepting.
            error!("cannot start control-mesh thread: {e}");
            session::serve(&ctx, stream, &peer, false);
            continue;
        }
        // Done accepting: a listener closed meanwhile need not wait for
        // this session to end.
        drop(listener);
        session::serve(&ctx, stream, &peer, false);
        return;
    }
}
