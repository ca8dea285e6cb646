//! `unix-socket-server` (local Unix socket -> mesh service) and
//! `unix-socket-client` (mesh service -> Unix socket).

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use std::sync::Arc;

use super::{client_section, forward_local, forward_mesh, server_section};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::tls::{ClientTls, Sections, ServerTls};

/// `tls` on a unix-socket-server is the `tls-client` for the mesh side;
/// on a unix-socket-client, the `tls-server` of the mesh service.
pub fn start(cfg: &ProxyCfg, net: &Netceptor, sections: &Sections) -> Result<(), String> {
    match cfg {
        ProxyCfg::UnixSocketServer {
            filename,
            permissions,
            remote_node,
            remote_service,
            tls,
        } => {
            let mesh = client_section(sections, tls)?;
            server(
                net,
                filename,
                *permissions,
                (remote_node, remote_service),
                mesh,
            )
        }
        ProxyCfg::UnixSocketClient {
            service,
            filename,
            tls,
        } => client(net, service, filename, server_section(sections, tls)?),
        _ => Err("not a Unix socket proxy".into()),
    }
}

fn server(
    net: &Netceptor,
    path: &Path,
    mode: u32,
    to: (&str, &str),
    mesh: Option<Arc<ClientTls>>,
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
    forward_local(what, listener, Ok, net, to, mesh)
}

fn client(
    net: &Netceptor,
    service: &str,
    path: &Path,
    mesh: Option<Arc<ServerTls>>,
) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "Unix Proxy".to_string()),
        ("filename".to_string(), path.display().to_string()),
    ]);
    let path = path.to_path_buf();
    forward_mesh(
        format!("unix-socket-client-{service}"),
        net,
        (service, tags),
        mesh,
        move || UnixStream::connect(&path),
    )
}
