//! `tcp-server` (local TCP port -> mesh service) and `tcp-client` (mesh
//! service -> TCP address).

use std::collections::BTreeMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use log::info;
use rustls::{ClientConnection, ServerConnection};

use super::{client_section, forward_local, forward_mesh, server_section};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::tls::io::TlsStream;
use crate::tls::{ClientTls, Sections, ServerTls};

pub fn start(cfg: &ProxyCfg, net: &Netceptor, tls: &Sections) -> Result<(), String> {
    match cfg {
        ProxyCfg::TcpServer {
            bind_addr,
            port,
            remote_node,
            remote_service,
            tls_server,
            tls_client,
        } => {
            let local = server_section(tls, tls_server)?;
            let mesh = client_section(tls, tls_client)?;
            let addr = format!("{bind_addr}:{port}");
            server(net, &addr, (remote_node, remote_service), local, mesh)
        }
        ProxyCfg::TcpClient {
            service,
            address,
            tls_server,
            tls_client,
        } => {
            let mesh = server_section(tls, tls_server)?;
            let local = client_section(tls, tls_client)?;
            client(net, service, address, mesh, local)
        }
        _ => Err("not a TCP proxy".into()),
    }
}

/// Accepts local TCP connections (over TLS with `local`) and carries each
/// to the mesh service (over TLS with `mesh`).
fn server(
    net: &Netceptor,
    addr: &str,
    to: (&str, &str),
    local: Option<Arc<ServerTls>>,
    mesh: Option<Arc<ClientTls>>,
) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("tcp-server {addr}: {e}"))?;
    info!("Listening on TCP {addr} for {}:{}", to.0, to.1);
    let name = format!("tcp-server-{addr}");
    match local {
        None => forward_local(name, listener, Ok, net, to, mesh),
        Some(tls) => {
            let config = Arc::new(tls.config().map_err(|e| e.to_string())?);
            let wrap = move |conn: TcpStream| {
                let tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
                TlsStream::establish(tls.into(), conn)
            };
            forward_local(name, listener, wrap, net, to, mesh)
        }
    }
}

/// Serves the mesh service (over TLS with `mesh`) and connects each stream
/// to `address` (over TLS with `local`, checking the address's host name).
fn client(
    net: &Netceptor,
    service: &str,
    address: &str,
    mesh: Option<Arc<ServerTls>>,
    local: Option<Arc<ClientTls>>,
) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "TCP Proxy".to_string()),
        ("address".to_string(), address.to_string()),
    ]);
    let name = format!("tcp-client-{service}");
    let address = address.to_string();
    let dial = {
        let address = address.clone();
        move || {
            let conn = TcpStream::connect(&address)?;
            let _ = conn.set_nodelay(true);
            Ok(conn)
        }
    };
    match local {
        None => forward_mesh(name, net, (service, tags), mesh, dial),
        Some(tls) => {
            let host = crate::backends::tcp::host_of(&address);
            let (config, server_name) = tls.for_host(host).map_err(|e| e.to_string())?;
            let config = Arc::new(config);
            let dial_tls = move || {
                let tls = ClientConnection::new(config.clone(), server_name.clone())
                    .map_err(io::Error::other)?;
                TlsStream::establish(tls.into(), dial()?)
            };
            forward_mesh(name, net, (service, tags), mesh, dial_tls)
        }
    }
}
