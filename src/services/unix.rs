//! `unix-socket-server` (local Unix socket -> mesh service) and
//! `unix-socket-client` (mesh service -> Unix socket).

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use log::{debug, error};

use super::{OnRemoteEof, bridge, spawn};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
use crate::stream::{self, DIAL_TIMEOUT, Listener};

pub fn start(cfg: &ProxyCfg, net: &Netceptor) -> Result<(), String> {
    match cfg {
        ProxyCfg::UnixSocketServer { tls: Some(_), .. }
        | ProxyCfg::UnixSocketClient { tls: Some(_), .. } => {
            Err("unix socket proxies: tls is not supported yet by this receptor".into())
        }
        ProxyCfg::UnixSocketServer {
            filename,
            permissions,
            remote_node,
            remote_service,
            ..
        } => server(net, filename, *permissions, remote_node, remote_service),
        ProxyCfg::UnixSocketClient {
            service, filename, ..
        } => client(net, service, filename),
        _ => Err("not a Unix socket proxy".into()),
    }
}

fn server(
    net: &Netceptor,
    path: &Path,
    mode: u32,
    node: &str,
    service: &str,
) -> Result<(), String> {
    let what = format!("unix-socket-server {}", path.display());
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{what}: {e}")),
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{what}: {e}"))?;
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| format!("{what}: {e}"))?;
    let (net, node, service) = (net.clone(), node.to_string(), service.to_string());
    spawn(what, move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn.inspect_err(|e| error!("unix-socket-server accept: {e}")) else {
                continue;
            };
            let (net, node, service) = (net.clone(), node.clone(), service.clone());
            let started = spawn("unix-server-conn".into(), move || {
                match stream::dial(&net, &node, &service, DIAL_TIMEOUT) {
                    Ok(s) => bridge(conn, &[], s, OnRemoteEof::HalfClose),
                    Err(e) => {
                        error!("unix-socket-server: cannot reach {node}:{service}: {e}");
                        let _ = conn.shutdown(Shutdown::Both);
                    }
                }
            });
            if let Err(e) = started {
                error!("{e}");
            }
        }
    })
}

fn client(net: &Netceptor, service: &str, path: &Path) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "Unix Proxy".to_string()),
        ("filename".to_string(), path.display().to_string()),
    ]);
    let listener = Listener::bind(net, service, Some(Advertise { conn_type: 1, tags }))
        .map_err(|e| format!("unix-socket-client {service}: {e}"))?;
    let path = path.to_path_buf();
    spawn(format!("unix-client-{service}"), move || {
        while let Ok(s) = listener.accept() {
            let path = path.clone();
            let started = spawn(
                "unix-client-conn".into(),
                move || match UnixStream::connect(&path) {
                    Ok(conn) => bridge(conn, &[], s, OnRemoteEof::HalfClose),
                    Err(e) => debug!(
                        "unix-socket-client: cannot connect to {}: {e}",
                        path.display()
                    ),
                },
            );
            if let Err(e) = started {
                error!("{e}");
            }
        }
    })
}
