//! `unix-socket-server` (local Unix socket -> mesh service) and
//! `unix-socket-client` (mesh service -> Unix socket).

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::{forward_local, forward_mesh};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;

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
    forward_local(what, listener, net, node, service)
}

fn client(net: &Netceptor, service: &str, path: &Path) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "Unix Proxy".to_string()),
        ("filename".to_string(), path.display().to_string()),
    ]);
    let path = path.to_path_buf();
    forward_mesh(
        format!("unix-socket-client-{service}"),
        net,
        service,
        tags,
        move || UnixStream::connect(&path),
    )
}
