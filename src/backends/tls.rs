//! TLS over a byte-stream backend. A rustls connection needs `&mut` for
//! both directions, and the session reads and writes on two threads, so
//! the connection sits behind a mutex that is never held across socket
//! I/O:
//!
//! * the reader thread reads ciphertext from the socket, then under the
//!   lock feeds it to rustls and takes the plaintext out;
//! * only the writer thread takes TLS records out of rustls (under the
//!   lock) and writes them to the socket (outside it), so records leave in
//!   the order rustls made them. When the reader's processing leaves
//!   records to send (alerts, key updates, session tickets), it nudges the
//!   writer, which then writes an empty batch.
//!
//! Holding the lock only for in-memory work means a writer blocked on a
//! full socket never stops the reader, so two peers that both send hard
//! cannot deadlock each other.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::framed::FrameSink;
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

    /// Whether the peer must claim a node ID its certificate lists.
    pub fn checks_names(&self) -> bool {
        match self {
            BackendTls::Server { check_names, .. } | BackendTls::Client { check_names, .. } => {
                *check_names
            }
        }
    }
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls connection shared by a session's reader and writer.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Connection>>);

impl Shared {
    pub fn new(mut conn: Connection) -> Shared {
        // The writer takes every record out at once after each batch, so
        // rustls never needs to refuse plaintext; the session's own queue
        // bounds what waits.
        conn.set_buffer_limit(None);
        Shared(Arc::new(Mutex::new(conn)))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Completes the handshake on a blocking socket within
/// [`HANDSHAKE_TIMEOUT`]; the socket's read timeout is restored after.
pub fn handshake<S>(conn: &mut Connection, sock: &mut S) -> io::Result<()>
where
    S: Read + Write + Timeouts,
{
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    // Whatever the handshake left queued (a TLS 1.3 server's tickets)
    // goes out before the session starts.
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    sock.set_read_timeout(None)
}

/// Sockets whose read timeout can be set.
pub trait Timeouts {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Timeouts for std::net::TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, t)
    }
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, t)
    }
}

/// The reader thread's side: plaintext out of ciphertext from `sock`.
pub struct TlsReader<S> {
    conn: Shared,
    sock: S,
    sink: Arc<FrameSink>,
    cipher: Vec<u8>,
    plain: Vec<u8>,
    taken: usize,
    ended: bool,
}

impl<S: Read> TlsReader<S> {
    pub fn new(conn: Shared, sock: S, sink: Arc<FrameSink>) -> TlsReader<S> {
        TlsReader {
            conn,
            sock,
            sink,
            cipher: vec![0; 64 * 1024],
            plain: Vec::new(),
            taken: 0,
            ended: false,
        }
    }

    /// Reads one socket buffer and decrypts all of it.
    fn fill(&mut self) -> io::Result<()> {
        let n = self.sock.read(&mut self.cipher)?;
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        self.plain.clear();
        self.taken = 0;
        let mut conn = self.conn.lock();
        let mut input = &self.cipher[..n];
        while !input.is_empty() {
            conn.read_tls(&mut input)?;
            let state = conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            let len = self.plain.len();
            self.plain.resize(len + state.plaintext_bytes_to_read(), 0);
            conn.reader().read_exact(&mut self.plain[len..])?;
            if state.peer_has_closed() {
                self.ended = true;
            }
        }
        let wants_write = conn.wants_write();
        drop(conn);
        if wants_write {
            self.sink.nudge();
        }
        Ok(())
    }
}

impl<S: Read> Read for TlsReader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.taken == self.plain.len() {
            if self.ended {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.plain.len() - self.taken);
        out[..n].copy_from_slice(&self.plain[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

/// The writer thread's side: plaintext in, records out to `sock`.
pub struct TlsWriter<S> {
    conn: Shared,
    sock: S,
    records: Vec<u8>,
}

impl<S: Write> TlsWriter<S> {
    pub fn new(conn: Shared, sock: S) -> TlsWriter<S> {
        TlsWriter {
            conn,
            sock,
            records: Vec::new(),
        }
    }
}

impl<S: Write> Write for TlsWriter<S> {
    fn write(&mut self, plain: &[u8]) -> io::Result<usize> {
        self.write_all(plain)?;
        Ok(plain.len())
    }

    /// Encrypts all of `plain` (possibly nothing) and sends every record
    /// rustls has queued, including ones the reader side left.
    fn write_all(&mut self, plain: &[u8]) -> io::Result<()> {
        self.records.clear();
        {
            let mut conn = self.conn.lock();
            conn.writer().write_all(plain)?;
            while conn.wants_write() {
                conn.write_tls(&mut self.records)?;
            }
        }
        self.sock.write_all(&self.records)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
    use std::os::unix::net::UnixStream;

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["peer.test".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// One end of a TLS session: handshake, then a writer thread draining a
    /// sink and a reader returning everything until the peer closes.
    fn end(
        mut conn: Connection,
        mut sock: UnixStream,
        send: Vec<u8>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            handshake(&mut conn, &mut sock).unwrap();
            let shared = Shared::new(conn);
            let sink = Arc::new(FrameSink::new(None));
            let writer = {
                let (sink, w) = (
                    sink.clone(),
                    TlsWriter::new(shared.clone(), sock.try_clone().unwrap()),
                );
                std::thread::spawn(move || sink.run_writer(w))
            };
            let mut link = crate::backends::framed::FramedLink::new(sink.clone());
            use crate::netceptor::link::Link;
            for chunk in send.chunks(60_000) {
                link.queue(chunk).unwrap();
                link.flush().unwrap();
            }
            let mut reader = TlsReader::new(shared, sock.try_clone().unwrap(), sink);
            let mut got = Vec::new();
            let mut frames = crate::netceptor::codec::FrameReader::default();
            let mut buf = vec![0; 4096];
            let want = send.len();
            while got.len() < want {
                let n = reader.read(&mut buf).unwrap();
                assert!(n > 0, "peer ended early");
                frames.push(&buf[..n]);
                while let Some(f) = frames.next_frame() {
                    got.extend_from_slice(&f);
                }
            }
            Box::new(link).close();
            writer.join().unwrap().unwrap();
            got
        })
    }

    #[test]
    fn both_ends_send_megabytes_at_once_without_deadlock() {
        let (server, client) = configs();
        let (a, b) = UnixStream::pair().unwrap();
        let name = ServerName::try_from("peer.test").unwrap();
        let c = Connection::from(ClientConnection::new(client, name).unwrap());
        let s = Connection::from(ServerConnection::new(server).unwrap());
        let data = |seed: u8| -> Vec<u8> { (0..4_000_000u32).map(|i| (i as u8) ^ seed).collect() };
        let (to_server, to_client) = (data(1), data(2));
        let client_end = end(c, a, to_server.clone());
        let server_end = end(s, b, to_client.clone());
        assert_eq!(server_end.join().unwrap(), to_server);
        assert_eq!(client_end.join().unwrap(), to_client);
    }
}
