//! One backend session: frames in to the router, frames out to the peer.

use std::io::{ErrorKind, Read, Write};

use crossbeam_channel::Receiver;
use log::error;

use crate::netceptor::Netceptor;
use crate::netceptor::codec::{FrameReader, write_frame};
use crate::netceptor::node::{BackendParams, ConnId};

/// Bytes gathered into one write when the writer's queue holds several frames.
const WRITE_BATCH: usize = 256 * 1024;

/// Runs a session to its end on the calling thread (the reader), with the
/// writer on its own thread. `close` must unblock the reader, e.g. by
/// shutting the socket down; the writer calls it when the router drops the
/// connection.
pub fn run<R, W, C>(net: &Netceptor, params: BackendParams, reader: R, writer: W, close: C)
where
    R: Read,
    W: Write + Send + 'static,
    C: Fn() + Send + Clone + 'static,
{
    let (conn, frames) = net.conn_opened(params);
    let close_on_end = close.clone();
    let writer_thread = std::thread::Builder::new()
        .name(format!("conn-{conn}-writer"))
        .spawn(move || {
            write_frames(writer, frames);
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

fn write_frames<W: Write>(mut writer: W, frames: Receiver<Vec<u8>>) {
    let mut out = Vec::with_capacity(WRITE_BATCH);
    while let Ok(first) = frames.recv() {
        out.clear();
        push(&mut out, &first);
        while out.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(msg) => push(&mut out, &msg),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&out).and_then(|()| writer.flush()) {
            if !is_closed(&e) {
                error!("Backend sending error {e}");
            }
            return;
        }
    }
}

fn push(out: &mut Vec<u8>, msg: &[u8]) {
    if let Err(e) = write_frame(out, msg) {
        error!("Backend sending error: {e}");
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotConnected | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
    )
}
