//! The QUIC handshake's TLS settings in "insecure" mode (docs/wire.md §11.3):
//! the listener shows a self-signed certificate with a fixed common name,
//! and the dialer accepts any certificate chain that carries that name.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use log::error;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{ClientConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::ratelog::{self, RateLog};

pub const INSECURE_COMMON_NAME: &str = "netceptor-insecure-common-name";
/// The protocol Go nodes speak: one stream per connection.
pub const ALPN: &[u8] = b"netceptor";
/// The same, except that a connection carries many streams. Only our
/// nodes know it: our servers prefer it and our dialers that share their
/// connections offer it first, while a Go server picks `netceptor` and a
/// Go client offers nothing else, so any Go end keeps the protocol it
/// knows.
pub const ALPN_STREAMS: &[u8] = b"netceptor-rs-streams";
/// What our servers accept and our sharing dialers offer, preferred first.
const OUR_ALPNS: [&[u8]; 2] = [ALPN_STREAMS, ALPN];
/// Streams a peer may have open on one connection at a time (Go's
/// default as well); a client that wants more dials another connection.
const MAX_STREAMS: u32 = 100;
/// Flow-control windows, quic-go's largest: per stream, and per
/// connection on one that carries one stream.
const STREAM_WINDOW: u32 = 6 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 15 * 1024 * 1024;
/// The connection window of a many-stream connection: room for every
/// stream it may carry to fill its own window. With the one-stream
/// window, three stalled results streams (6 MiB each) held all of it and
/// the control streams beside them waited out their reply timeouts. A
/// peer can make us buffer no more than it could over 100 one-stream
/// connections, and, being credit, it costs nothing until used.
pub const SHARED_CONNECTION_WINDOW: u32 = MAX_STREAMS * STREAM_WINDOW;

/// Whether a connection whose handshake agreed on `alpn` carries many
/// streams.
pub fn carries_many_streams(alpn: Option<&[u8]>) -> bool {
    alpn == Some(ALPN_STREAMS)
}

/// quic-go reads at most this many bytes per datagram.
pub const MAX_QUIC_PACKET: u16 = 1452;
/// Idle timeout of stream connections; dialers keep alive at half of it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener certificate and its signing key: made once per process,
/// at the first handshake (ECDSA P-256 is cheap, unlike the RSA-2048 key
/// Go generates on every start). A failure is not kept: the next
/// handshake tries again, as a restart would have before. Its validity
/// starts a day back, so clock skew between nodes does not matter, and
/// runs for years, so a long-lived daemon never outlives it (dialers do
/// not check dates in this mode anyway).
fn insecure_identity() -> Result<Arc<CertifiedKey>, String> {
    static IDENTITY: OnceLock<Arc<CertifiedKey>> = OnceLock::new();
    if let Some(key) = IDENTITY.get() {
        return Ok(key.clone());
    }
    let key = make_identity().map_err(|e| format!("cannot make the stream certificate: {e}"))?;
    // Two first handshakes at once may both make one; the first kept wins.
    Ok(IDENTITY.get_or_init(|| key).clone())
}

fn make_identity() -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, INSECURE_COMMON_NAME);
    params.serial_number = Some(rcgen::SerialNumber::from(vec![1]));
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(24 * 3600)).into();
    params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

fn transport(idle: Duration, keep_alive: bool) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX);
    t.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(idle_ms))));
    t.keep_alive_interval(keep_alive.then_some(idle / 2));
    // Never probe past what quic-go reads.
    t.initial_mtu(MAX_QUIC_PACKET);
    t.min_mtu(MAX_QUIC_PACKET);
    t.mtu_discovery_config(None);
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(CONNECTION_WINDOW.into());
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS));
    Arc::new(t)
}

/// The listener side in insecure mode.
pub fn server_config(idle: Duration) -> Result<Arc<ServerConfig>, String> {
    quic_server(insecure_server_tls()?, idle)
}

fn insecure_server_tls() -> Result<rustls::ServerConfig, String> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LazyIdentity)))
}

/// Shows the listener certificate, made at the first handshake rather
/// than at start-up: an idle node that is never dialed then never touches
/// the key generation, its code or ring's 148 KiB P-256 table, which
/// otherwise stay mapped for the life of the process (BENCHMARKS.md,
/// "Idle memory").
#[derive(Debug)]
struct LazyIdentity;

impl ResolvesServerCert for LazyIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match insecure_identity() {
            Ok(key) => Some(key),
            Err(e) => {
                // The handshake fails and its dialer retries, so this
                // could come on every dial.
                static SAID: Mutex<Option<RateLog>> = Mutex::new(None);
                let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
                let log = said.get_or_insert_with(RateLog::default);
                if let Some(held) = log.allow(Instant::now()) {
                    error!("{e}{}", ratelog::suffix(held));
                }
                None
            }
        }
    }
}

/// A listener whose service has a `tls-server` section: its rustls
/// config, carried by QUIC.
pub fn quic_server(tls: rustls::ServerConfig, idle: Duration) -> Result<Arc<ServerConfig>, String> {
    quic_server_speaking(tls, idle, &OUR_ALPNS)
}

/// A listener that accepts the protocols `alpns`, preferred first.
fn quic_server_speaking(
    mut tls: rustls::ServerConfig,
    idle: Duration,
    alpns: &[&[u8]],
) -> Result<Arc<ServerConfig>, String> {
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let quic = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(idle, false));
    cfg.migration(false);
    Ok(Arc::new(cfg))
}

/// The dialer side in insecure mode; `many`: offer many streams per
/// connection.
pub fn client_config(idle: Duration, many: bool) -> Result<ClientConfig, String> {
    quic_client(insecure_client_tls()?, idle, many)
}

fn insecure_client_tls() -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier = InsecureNameVerifier {
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A dialer with a `tls-client` section: its rustls config, carried by
/// QUIC. Only a dialer that will open `many` streams on the connection
/// offers to: a single-use one would keep its connection up for nothing
/// after its stream ends.
pub fn quic_client(
    mut tls: rustls::ClientConfig,
    idle: Duration,
    many: bool,
) -> Result<ClientConfig, String> {
    let alpns: &[&[u8]] = if many { &OUR_ALPNS } else { &[ALPN] };
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    tls.enable_sni = true;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(idle, true));
    Ok(cfg)
}

/// The server name a dialer sends: Go sends its own node ID; rustls only
/// sends DNS-valid names, so other IDs fall back to a fixed one (Go
/// listeners ignore SNI in this mode).
pub fn sni_for(node_id: &str) -> String {
    match ServerName::try_from(node_id) {
        Ok(ServerName::DnsName(_)) => node_id.to_string(),
        _ => "receptor".to_string(),
    }
}

/// Accepts a chain when any certificate in it has the insecure common
/// name; the handshake signature is still verified.
#[derive(Debug)]
struct InsecureNameVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let named = std::iter::once(end_entity)
            .chain(intermediates)
            .any(|c| has_common_name(c, INSECURE_COMMON_NAME));
        if named {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "insecure connection to secure service".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn has_common_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    parsed
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str().is_ok_and(|s| s == name))
}

/// A listener that speaks only what Go's does, for tests.
#[cfg(test)]
pub fn go_server_config(idle: Duration) -> Result<Arc<ServerConfig>, String> {
    quic_server_speaking(insecure_server_tls()?, idle, &[ALPN])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocol a TLS handshake between a client offering `offered`
    /// and a server accepting `accepted` agrees on.
    fn agreed(offered: &[&[u8]], accepted: &[&[u8]]) -> Option<Vec<u8>> {
        let mut client_tls = insecure_client_tls().unwrap();
        client_tls.alpn_protocols = offered.iter().map(|a| a.to_vec()).collect();
        let mut server_tls = insecure_server_tls().unwrap();
        server_tls.alpn_protocols = accepted.iter().map(|a| a.to_vec()).collect();
        let name = ServerName::try_from("receptor").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_tls), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_tls)).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut flight = Vec::new();
            client.write_tls(&mut flight).unwrap();
            server.read_tls(&mut &flight[..]).unwrap();
            server.process_new_packets().unwrap();
            flight.clear();
            server.write_tls(&mut flight).unwrap();
            client.read_tls(&mut &flight[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        assert_eq!(client.alpn_protocol(), server.alpn_protocol());
        client.alpn_protocol().map(<[u8]>::to_vec)
    }

    #[test]
    fn many_streams_only_when_both_ends_are_ours() {
        let ours = &OUR_ALPNS[..];
        let go: &[&[u8]] = &[ALPN];
        let cases = [(ours, ours, true), (go, ours, false), (ours, go, false)];
        for (offered, accepted, many) in cases {
            let alpn = agreed(offered, accepted);
            assert!(alpn.is_some(), "some protocol is always agreed");
            assert_eq!(carries_many_streams(alpn.as_deref()), many, "{alpn:?}");
        }
    }

    /// The certificate is made once: every handshake shows the same one.
    #[test]
    fn the_listener_identity_is_made_once() {
        let (first, again) = (insecure_identity().unwrap(), insecure_identity().unwrap());
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn certificate_carries_the_insecure_name() {
        let key = insecure_identity().unwrap();
        let cert = &key.cert[0];
        assert!(has_common_name(cert, INSECURE_COMMON_NAME));
        assert!(!has_common_name(cert, "other"));
        assert!(!has_common_name(
            &CertificateDer::from(vec![1, 2, 3]),
            INSECURE_COMMON_NAME
        ));
    }

    #[test]
    fn sni_falls_back_for_names_that_are_not_dns() {
        assert_eq!(sni_for("controller01"), "controller01");
        assert_eq!(sni_for("my node"), "receptor");
        assert_eq!(sni_for("a@b"), "receptor");
    }
}
