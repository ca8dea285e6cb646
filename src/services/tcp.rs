//! `tcp-server` (local TCP port -> mesh service) and `tcp-client` (mesh
//! service -> TCP address).

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};

use log::{debug, error, info};

use super::{OnRemoteEof, bridge, spawn};
use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
use crate::stream::{self, DIAL_TIMEOUT, Listener};

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
    let (net, node, service) = (net.clone(), node.to_string(), service.to_string());
    spawn(format!("tcp-server-{addr}"), move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn.inspect_err(|e| error!("tcp-server accept: {e}")) else {
                continue;
            };
            let (net, node, service) = (net.clone(), node.clone(), service.clone());
            let started = spawn("tcp-server-conn".into(), move || {
                let _ = conn.set_nodelay(true);
                match stream::dial(&net, &node, &service, DIAL_TIMEOUT) {
                    Ok(s) => bridge(conn, &[], s, OnRemoteEof::HalfClose),
                    Err(e) => {
                        error!("tcp-server: cannot reach {node}:{service}: {e}");
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

/// Serves the mesh service and connects each stream to `address`.
fn client(net: &Netceptor, service: &str, address: &str) -> Result<(), String> {
    let tags = BTreeMap::from([
        ("type".to_string(), "TCP Proxy".to_string()),
        ("address".to_string(), address.to_string()),
    ]);
    let listener = Listener::bind(net, service, Some(Advertise { conn_type: 1, tags }))
        .map_err(|e| format!("tcp-client {service}: {e}"))?;
    let address = address.to_string();
    spawn(format!("tcp-client-{service}"), move || {
        while let Ok(s) = listener.accept() {
            let address = address.clone();
            let started = spawn("tcp-client-conn".into(), move || {
                match TcpStream::connect(&address) {
                    Ok(conn) => {
                        let _ = conn.set_nodelay(true);
                        bridge(conn, &[], s, OnRemoteEof::HalfClose);
                    }
                    // Closing the stream at once tells the far client; Go
                    // leaves it open and the client hangs.
                    Err(e) => debug!("tcp-client: cannot connect to {address}: {e}"),
                }
            });
            if let Err(e) = started {
                error!("{e}");
            }
        }
    })
}
