//! One backend session: frames in to the router, frames out to the peer.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use log::error;

use super::sink::FrameSink;
use crate::netceptor::Netceptor;
use crate::netceptor::codec::FrameReader;
use crate::netceptor::node::{BackendParams, ConnId};

/// Runs a session to its end on the calling thread (the reader), with the
/// writer on its own thread. `fd` enables direct sends from the router.
/// `close` must unblock the reader, e.g. by shutting the socket down; the
/// writer calls it when the router drops the connection.
pub fn run<R, W, C>(
    net: &Netceptor,
    params: BackendParams,
    reader: R,
    writer: W,
    fd: Option<RawFd>,
    close: C,
) where
    R: Read,
    W: Write + Send + 'static,
    C: Fn() + Send + Clone + 'static,
{
    let sink = Arc::new(FrameSink::new(fd));
    let conn = net.conn_opened(params, sink.clone());
    let close_on_end = close.clone();
    let writer_sink = sink.clone();
    let writer_thread = std::thread::Builder::new()
        .name(format!("conn-{conn}-writer"))
        .spawn(move || {
            if let Err(e) = writer_sink.run_writer(writer)
                && !is_closed(&e)
            {
                error!("Backend sending error {e}");
            }
            close_on_end();
        });
    if let Err(e) = writer_thread {
        error!("Backend error: cannot start writer: {e}");
        net.conn_closed(conn);
        close();
        return;
    }
    read_frames(net, conn, reader);
    net.conn_closed(conn);
    sink.close();
    close();
}

fn read_frames<R: Read>(net: &Netceptor, conn: ConnId, mut reader: R) {
    let mut frames = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                frames.push(&buf[..n]);
                while let Some(msg) = frames.next_frame() {
                    net.conn_message(conn, msg);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if !is_closed(&e) {
                    error!("Backend receiving error {e}");
                }
                return;
            }
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotConnected | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
    )
}
