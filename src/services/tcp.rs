//! `tcp-server` (local TCP port -> mesh service) and `tcp-client` (mesh
//! service -> TCP address).

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};

use log::info;

use super::{forward_local, forward_mesh};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;

pub fn start(cfg: &ProxyCfg, net: &Netceptor) -> Result<(), String> {
    match cfg {
        ProxyCfg::TcpServer {
            tls_server: Some(_),
            ..
        }
        | ProxyCfg::TcpServer {
            tls_client: Some(_),
            ..
        }
        | ProxyCfg::TcpClient {
            tls_server: Some(_),
            ..
        }
        | ProxyCfg::TcpClient {
            tls_client: Some(_),
            ..
        } => Err("tcp proxies: tls options are not supported yet by this receptor".into()),
        ProxyCfg::TcpServer {
            bind_addr,
            port,
            remote_node,
            remote_service,
            ..
        } => server(
            net,
            &format!("{bind_addr}:{port}"),
            remote_node,
            remote_service,
        ),
        ProxyCfg::TcpClient {
            service, address, ..
        } => client(net, service, address),
        _ => Err("not a TCP proxy".into()),
    }
}

/// Accepts local TCP connections and carries each to the mesh service.
fn server(net: &Netceptor, addr: &str, node: &str, service: &str) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("tcp-server {addr}: {e}"))?;
    info!("Listening on TCP {addr} for {node}:{service}");
    forward_local(format!("tcp-server-{addr}"), listener, net, node, service)
}

/// Serves the mesh service and connects each stream to `address`.
fn client(net: &Netceptor, service: &str, address: &str) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "TCP Proxy".to_string()),
        ("address".to_string(), address.to_string()),
    ]);
    let address = address.to_string();
    forward_mesh(
        format!("tcp-client-{service}"),
        net,
        service,
        tags,
        move || {
            let conn = TcpStream::connect(&address)?;
            let _ = conn.set_nodelay(true);
            Ok(conn)
        },
    )
}
