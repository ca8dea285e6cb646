//! Every `tls-server` and `tls-client` section of a configuration, loaded
//! once at startup and looked up by name by the directives that use them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{ClientTls, ServerTls, TlsError};
use crate::config::{TlsClientCfg, TlsServerCfg};

/// A directive names a TLS section that does not exist (Go's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTls(pub String);

impl fmt::Display for UnknownTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown TLS config {}", self.0)
    }
}

impl std::error::Error for UnknownTls {}

/// The name of the client section Go always has: no certificate, the
/// system roots.
const DEFAULT_CLIENT: &str = "default";

#[derive(Debug, Default)]
pub struct Sections {
    servers: HashMap<String, Arc<ServerTls>>,
    clients: HashMap<String, Arc<ClientTls>>,
}

impl Sections {
    /// Loads and checks every section for node `node_id`.
    pub fn load(
        servers: &[TlsServerCfg],
        clients: &[TlsClientCfg],
        node_id: &str,
    ) -> Result<Sections, TlsError> {
        let mut sections = Sections::default();
        for cfg in servers {
            let tls = Arc::new(ServerTls::load(cfg, node_id)?);
            sections.servers.insert(cfg.name.clone(), tls);
        }
        for cfg in clients {
            let tls = Arc::new(ClientTls::load(cfg, node_id)?);
            sections.clients.insert(cfg.name.clone(), tls);
        }
        Ok(sections)
    }

    pub fn server(&self, name: &str) -> Result<Arc<ServerTls>, UnknownTls> {
        self.servers
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownTls(name.to_string()))
    }

    /// A client section; `default` exists unless the config defines its
    /// own.
    pub fn client(&self, name: &str) -> Result<Arc<ClientTls>, UnknownTls> {
        if let Some(tls) = self.clients.get(name) {
            return Ok(tls.clone());
        }
        if name == DEFAULT_CLIENT {
            let cfg = TlsClientCfg {
                name: name.to_string(),
                cert: None,
                key: None,
                root_cas: None,
                insecure_skip_verify: false,
                pinned_server_cert: Vec::new(),
                skip_receptor_names_check: false,
                min_tls13: false,
            };
            // Without files to read, loading cannot fail.
            if let Ok(tls) = ClientTls::load(&cfg, "") {
                return Ok(Arc::new(tls));
            }
        }
        Err(UnknownTls(name.to_string()))
    }
}
