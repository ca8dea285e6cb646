//! TLS over blocking byte streams (backends, the control service's TCP
//! port, proxies). A rustls connection needs `&mut` for both directions,
//! and its users read and write on two threads, so
//! the connection sits behind a mutex that is never held across socket
//! I/O:
//!
//! * the reader thread reads ciphertext from the socket, then under the
//!   lock feeds it to rustls and takes the plaintext out;
//! * only one writer at a time takes TLS records out of rustls (under the
//!   lock) and writes them to the socket (outside it), so records leave in
//!   the order rustls made them. When the reader's processing leaves
//!   records to send (alerts, key updates, session tickets), it hands them
//!   to the writer: a backend nudges its writer thread to write an empty
//!   batch; a [`TlsStream`] writes them itself if no write is under way.
//!
//! Holding the lock only for in-memory work means a writer blocked on a
//! full socket never stops the reader, so two peers that both send hard
//! cannot deadlock each other.

use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::Connection;

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

/// What a reader calls when its processing left records to send.
pub type OnRecords = Box<dyn Fn() + Send>;

/// The reader thread's side: plaintext out of ciphertext from `sock`.
pub struct TlsReader<S> {
    conn: Shared,
    sock: S,
    on_records: OnRecords,
    cipher: Vec<u8>,
    plain: Vec<u8>,
    taken: usize,
    ended: bool,
}

impl<S: Read> TlsReader<S> {
    pub fn new(conn: Shared, sock: S, on_records: OnRecords) -> TlsReader<S> {
        TlsReader {
            conn,
            sock,
            on_records,
            cipher: vec![0; 64 * 1024],
            plain: Vec::new(),
            taken: 0,
            ended: false,
        }
    }

    /// Decrypts one socket buffer, or first whatever rustls already holds
    /// (the handshake may have read application data with its last
    /// flight, and no more may come until we answer it).
    fn fill(&mut self) -> io::Result<()> {
        self.plain.clear();
        self.taken = 0;
        self.decrypt(0)?;
        if !self.plain.is_empty() || self.ended {
            return Ok(());
        }
        let n = self.sock.read(&mut self.cipher)?;
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        self.decrypt(n)
    }

    /// Feeds `cipher[..n]` to rustls and takes out all the plaintext.
    fn decrypt(&mut self, n: usize) -> io::Result<()> {
        let mut conn = self.conn.lock();
        let mut input = &self.cipher[..n];
        loop {
            let state = conn
                .process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            let len = self.plain.len();
            self.plain.resize(len + state.plaintext_bytes_to_read(), 0);
            conn.reader().read_exact(&mut self.plain[len..])?;
            if state.peer_has_closed() {
                self.ended = true;
            }
            if input.is_empty() {
                break;
            }
            conn.read_tls(&mut input)?;
        }
        let wants_write = conn.wants_write();
        drop(conn);
        if wants_write {
            (self.on_records)();
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

/// A socket that can be duplicated for a second thread.
pub trait Duplex: Read + Write + Timeouts + Send + Sized + 'static {
    fn duplicate(&self) -> io::Result<Self>;
}

impl Duplex for std::net::TcpStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

impl Duplex for std::os::unix::net::UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
}

/// A TLS connection used as one blocking socket, which may be cloned so
/// one thread reads while another writes (the control service, proxies).
/// Writes, and records the reader leaves behind, go out under one lock so
/// they keep rustls's order.
pub struct TlsStream<S> {
    shared: Shared,
    writer: Arc<Mutex<TlsWriter<S>>>,
    reader: TlsReader<S>,
    sock: S,
}

impl<S: Duplex> TlsStream<S> {
    /// Runs the handshake on `sock`, then wraps it.
    pub fn establish(mut conn: Connection, mut sock: S) -> io::Result<TlsStream<S>> {
        handshake(&mut conn, &mut sock)?;
        let shared = Shared::new(conn);
        let writer = Arc::new(Mutex::new(TlsWriter::new(
            shared.clone(),
            sock.duplicate()?,
        )));
        TlsStream::from_parts(shared, writer, sock)
    }

    fn from_parts(
        shared: Shared,
        writer: Arc<Mutex<TlsWriter<S>>>,
        sock: S,
    ) -> io::Result<TlsStream<S>> {
        let pending = writer.clone();
        // A write under way carries the records out itself.
        let on_records: OnRecords = Box::new(move || {
            if let Ok(mut w) = pending.try_lock() {
                let _ = w.write_all(&[]);
            }
        });
        let reader = TlsReader::new(shared.clone(), sock.duplicate()?, on_records);
        Ok(TlsStream {
            shared,
            writer,
            reader,
            sock,
        })
    }

    pub fn try_clone(&self) -> io::Result<TlsStream<S>> {
        TlsStream::from_parts(
            self.shared.clone(),
            self.writer.clone(),
            self.sock.duplicate()?,
        )
    }

    /// The socket underneath, for shutdown and hang-up checks.
    pub fn socket(&self) -> &S {
        &self.sock
    }

    /// The peer's certificate chain, as the handshake left it.
    pub fn peer_node_ids(&self) -> Vec<String> {
        let conn = self.shared.lock();
        super::peer_node_ids(conn.peer_certificates()).unwrap_or_default()
    }

    /// Says goodbye the TLS way before the socket's write side closes.
    pub fn close_notify(&self) {
        self.shared.lock().send_close_notify();
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.write_all(&[]);
    }
}

impl<S: Duplex> Read for TlsStream<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read(out)
    }
}

impl<S: Duplex> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::framed::FrameSink;
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
            let nudge = sink.clone();
            let on_records = Box::new(move || nudge.nudge());
            let mut reader = TlsReader::new(shared, sock.try_clone().unwrap(), on_records);
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

    #[test]
    fn a_tls_stream_carries_a_line_protocol_both_ways() {
        use std::io::{BufRead, BufReader};
        let (server, client) = configs();
        let (a, b) = UnixStream::pair().unwrap();
        let s = Connection::from(ServerConnection::new(server).unwrap());
        let echo = std::thread::spawn(move || {
            let stream = TlsStream::establish(s, b).unwrap();
            let mut out = stream.try_clone().unwrap();
            for line in BufReader::new(stream).lines() {
                let line = line.unwrap();
                out.write_all(format!("echo {line}\n").as_bytes()).unwrap();
            }
        });
        let name = ServerName::try_from("peer.test").unwrap();
        let c = Connection::from(ClientConnection::new(client, name).unwrap());
        let mut stream = TlsStream::establish(c, a).unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
        for i in 0..100 {
            stream.write_all(format!("line {i}\n").as_bytes()).unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), format!("echo line {i}"));
        }
        stream.close_notify();
        stream.socket().shutdown(std::net::Shutdown::Write).unwrap();
        echo.join().unwrap();
    }
}
