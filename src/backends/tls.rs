//! TLS for byte-stream backends: how a listener or a dialer speaks TLS,
//! built once from its section. The I/O itself (a rustls connection shared
//! by the session's reader and writer threads) is `crate::tls::io`.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::tls::{ClientTls, ServerTls, TlsError};

/// How one backend (a listener, or a peer it dials) speaks TLS, built once
/// from its `tls-server` or `tls-client` section.
#[derive(Clone)]
pub enum BackendTls {
    Server {
        config: Arc<ServerConfig>,
        check_names: bool,
    },
    Client {
        config: Arc<ClientConfig>,
        host: ServerName<'static>,
        check_names: bool,
    },
}

impl BackendTls {
    pub fn server(tls: &ServerTls) -> Result<BackendTls, TlsError> {
        Ok(BackendTls::Server {
            config: Arc::new(tls.config()?),
            check_names: !tls.skip_names_check,
        })
    }

    /// For dialing `host` (the address's DNS name or IP, which the server's
    /// certificate must match).
    pub fn client(tls: &ClientTls, host: &str) -> Result<BackendTls, TlsError> {
        let (config, host) = tls.for_host(host)?;
        Ok(BackendTls::Client {
            config: Arc::new(config),
            host,
            check_names: !tls.skip_names_check,
        })
    }

    /// A fresh connection state for one link.
    pub fn connection(&self) -> Result<Connection, rustls::Error> {
        Ok(match self {
            BackendTls::Server { config, .. } => ServerConnection::new(config.clone())?.into(),
            BackendTls::Client { config, host, .. } => {
                ClientConnection::new(config.clone(), host.clone())?.into()
            }
        })
    }

    /// The node IDs the peer must claim one of, after the handshake: those
    /// its certificate lists, when names are checked and it showed one. A
    /// client that shows none (allowed unless `requireclientcert`) is let
    /// in as Go lets it in; a certificate that lists no node ID admits
    /// nobody.
    pub fn node_ids_to_check(&self, conn: &Connection) -> Option<Vec<String>> {
        let (BackendTls::Server { check_names, .. } | BackendTls::Client { check_names, .. }) =
            self;
        let chain = conn.peer_certificates().filter(|c| !c.is_empty());
        (*check_names && chain.is_some())
            .then(|| crate::tls::peer_node_ids(chain).unwrap_or_default())
    }
}
