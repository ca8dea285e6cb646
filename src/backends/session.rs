//! One backend session: frames in to the router, frames out to the peer.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use log::error;

use super::framed::{FrameSink, FramedLink};
use crate::netceptor::Netceptor;
use crate::netceptor::codec::FrameReader;
use crate::netceptor::node::{BackendParams, ConnId};

/// Runs a session to its end on the calling thread (the reader), with the
/// writer on its own thread draining `sink` into `writer`. `close` must
/// unblock the reader, e.g. by shutting the socket down; the writer calls
/// it when the router closes the link.
pub fn run<R, W, C>(
    net: &Netceptor,
    params: BackendParams,
    reader: R,
    writer: W,
    sink: Arc<FrameSink>,
    close: C,
) where
    R: Read,
    W: Write + Send + 'static,
    C: Fn() + Send + Clone + 'static,
{
    let close_on_end = close.clone();
    let writer_sink = sink.clone();
    // The writer exists before the router learns of the link, so a link
    // the router holds always has someone draining it.
    let writer_thread = std::thread::Builder::new()
        .name("conn-writer".into())
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
        close();
        return;
    }
    let conn = net.conn_opened(params, Box::new(FramedLink::new(sink)));
    read_frames(net, conn, reader);
    // The router closes the link, which ends the writer.
    net.conn_closed(conn);
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
