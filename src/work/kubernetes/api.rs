//! The thin I/O shell: core/v1 requests over ureq, attach over a
//! tungstenite WebSocket. No decisions are made here (see `core.rs`).

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::auth::Credentials;

/// One request (not a stream) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Stdin goes out in WebSocket messages of at most this size.
const ATTACH_CHUNK: usize = 32 * 1024;
/// Channel byte of stdin, and v5's close signal (docs/kubernetes.md §5.4).
const CHANNEL_STDIN: u8 = 0;
const CHANNEL_CLOSE: u8 = 255;
const PROTO_V5: &str = "v5.channel.k8s.io";
const PROTO_V4: &str = "v4.channel.k8s.io";

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The server answered with an error status; `message` is its
    /// Status object's message (or the body).
    Status { code: u16, message: String },
    /// No answer: connect, TLS or read failure.
    Transport(String),
}

impl ApiError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { code: 404, .. })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Status { message, .. } => f.write_str(message),
            ApiError::Transport(e) => f.write_str(e),
        }
    }
}

/// A client of one API server.
pub struct Api {
    agent: ureq::Agent,
    creds: Credentials,
    attach_tls: Arc<rustls::ClientConfig>,
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The CA bundle used when the kubeconfig names none.
fn system_ca() -> Vec<u8> {
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundles = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ];
    env.into_iter()
        .chain(bundles.iter().map(std::path::PathBuf::from))
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default()
}

impl Api {
    pub fn new(creds: Credentials) -> Result<Api, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = creds.ca_pem.clone().unwrap_or_else(system_ca);
        let mut tls = TlsConfig::builder()
            .unversioned_rustls_crypto_provider(provider.clone())
            .root_certs(RootCerts::Specific(Arc::new(pem_certs(&ca))))
            .disable_verification(creds.insecure);
        if let Some((cert, key)) = &creds.client {
            let chain = pem_certs(cert);
            let key = PrivateKey::from_pem(key).map_err(|e| format!("client key: {e}"))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_redirects(0)
            .build()
            .into();
        let attach_tls = Arc::new(attach_config(&creds, &ca, provider)?);
        Ok(Api {
            agent,
            creds,
            attach_tls,
        })
    }

    pub fn namespace_hint(&self) -> Option<&str> {
        self.creds.namespace.as_deref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.creds.server)
    }

    fn auth(&self) -> Result<Option<String>, ApiError> {
        self.creds
            .bearer()
            .map(|t| t.map(|t| format!("Bearer {t}")))
            .map_err(ApiError::Transport)
    }

    /// One request; `timeout` None for streams.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, ApiError> {
        let url = self.url(path);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(a) = self.auth()? {
            req = req.header("Authorization", a);
        }
        let transport = |e: ureq::Error| ApiError::Transport(format!("{method} {url}: {e}"));
        let resp = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .map_err(|e| ApiError::Transport(e.to_string()))?;
                let req = ureq::RequestExt::with_agent(req, &self.agent)
                    .configure()
                    .timeout_global(timeout)
                    .run();
                req.map_err(transport)?
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| ApiError::Transport(e.to_string()))?;
                ureq::RequestExt::with_agent(req, &self.agent)
                    .configure()
                    .timeout_global(timeout)
                    .run()
                    .map_err(transport)?
            }
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let mut resp = resp;
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| match text.trim() {
                "" => format!("the server responded with status {code}"),
                t => t.to_string(),
            });
        Err(ApiError::Status { code, message })
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ApiError> {
        let mut resp = self.send(method, path, body, Some(REQUEST_TIMEOUT))?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ApiError::Transport(format!("bad JSON: {e}")))
    }

    pub fn version(&self) -> Result<String, ApiError> {
        let v = self.json("GET", "/version", None)?;
        Ok(v["gitVersion"].as_str().unwrap_or("").to_string())
    }

    pub fn create_pod(&self, ns: &str, pod: &Value) -> Result<Value, ApiError> {
        self.json("POST", &format!("/api/v1/namespaces/{ns}/pods"), Some(pod))
    }

    pub fn get_pod(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.json("GET", &format!("/api/v1/namespaces/{ns}/pods/{name}"), None)
    }

    pub fn delete_pod(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.json(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            None,
        )
    }

    pub fn list_pod(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        let path = format!("/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3D{name}");
        self.json("GET", &path, None)
    }

    /// A watch: one JSON event per line.
    pub fn watch_pod(
        &self,
        ns: &str,
        name: &str,
        resource_version: &str,
        timeout: Option<Duration>,
    ) -> Result<impl Read + use<>, ApiError> {
        let path = format!(
            "/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3D{name}\
             &watch=true&allowWatchBookmarks=false&resourceVersion={resource_version}&timeoutSeconds=300"
        );
        let resp = self.send("GET", &path, None, timeout)?;
        Ok(resp.into_body().into_reader())
    }

    /// The worker's log stream.
    pub fn logs(
        &self,
        ns: &str,
        name: &str,
        follow: bool,
        timestamps: bool,
        since: Option<&str>,
    ) -> Result<impl Read + use<>, ApiError> {
        let mut path = format!("/api/v1/namespaces/{ns}/pods/{name}/log?container=worker");
        if follow {
            path.push_str("&follow=true");
        }
        if timestamps {
            path.push_str("&timestamps=true");
        }
        if let Some(s) = since {
            path.push_str("&sinceTime=");
            path.push_str(&s.replace(':', "%3A"));
        }
        let resp = self.send("GET", &path, None, None)?;
        Ok(resp.into_body().into_reader())
    }

    /// Copies `stdin` into the worker over a WebSocket attach and closes
    /// it; returns the channel protocol the server chose.
    pub fn attach(&self, ns: &str, name: &str, stdin: &mut dyn Read) -> Result<String, String> {
        let url = self.url(&format!(
            "/api/v1/namespaces/{ns}/pods/{name}/attach?container=worker&stdin=true"
        ));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("not an https URL: {url}"))?;
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = split_host_port(authority)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {authority}"))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connecting to {authority}: {e}"))?;
        tcp.set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let sni =
            ServerName::try_from(host.clone()).map_err(|e| format!("server name {host}: {e}"))?;
        let conn = rustls::ClientConnection::new(self.attach_tls.clone(), sni)
            .map_err(|e| e.to_string())?;
        let stream = rustls::StreamOwned::new(conn, tcp);
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("wss://{rest}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        let protos = format!("{PROTO_V5}, {PROTO_V4}");
        headers.insert(
            "Sec-WebSocket-Protocol",
            protos.parse().map_err(|_| "bad header".to_string())?,
        );
        if let Some(a) = self.auth().map_err(|e| e.to_string())? {
            headers.insert(
                "Authorization",
                a.parse().map_err(|_| "bad token".to_string())?,
            );
        }
        let (mut ws, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                let body = r.body().as_deref().map(String::from_utf8_lossy);
                let msg = body
                    .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                    .and_then(|v| v["message"].as_str().map(str::to_string));
                msg.unwrap_or_else(|| format!("the server responded with status {}", r.status()))
            }
            other => other.to_string(),
        })?;
        let proto = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let ws_err = |e: tungstenite::Error| format!("attach: {e}");
        let mut buf = vec![0u8; ATTACH_CHUNK + 1];
        loop {
            let n = stdin
                .read(&mut buf[1..])
                .map_err(|e| format!("reading stdin: {e}"))?;
            if n == 0 {
                break;
            }
            buf[0] = CHANNEL_STDIN;
            ws.send(tungstenite::Message::binary(buf[..=n].to_vec()))
                .map_err(ws_err)?;
        }
        if proto == PROTO_V5 {
            ws.send(tungstenite::Message::binary(vec![
                CHANNEL_CLOSE,
                CHANNEL_STDIN,
            ]))
            .map_err(ws_err)?;
        }
        // v4 has no close-stdin signal: detaching closes it (stdinOnce).
        let _ = ws.close(None);
        loop {
            match ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = ws.get_mut().flush();
        Ok(proto)
    }
}

/// The host (unbracketed) and port of an `https` authority.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let bad = || format!("bad port in {authority}");
    let (host, port) = crate::hostport::split_authority(authority).ok_or_else(bad)?;
    let port = port.unwrap_or("443").parse().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// The rustls client of the attach WebSocket, with the same trust and
/// identity as the ureq agent.
fn attach_config(
    creds: &Credentials,
    ca: &[u8],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if creds.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca).filter_map(Result::ok));
        builder.with_root_certificates(roots)
    };
    match &creds.client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .filter_map(Result::ok)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// `insecure-skip-tls-verify`: any certificate; handshake signatures are
/// still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
