//! Endpoint drivers joined by an in-memory datagram pipe that can lose,
//! duplicate and reorder packets.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::*;
use crate::netceptor::Delivery;
use crate::netceptor::codec::ServiceName;

#[derive(Default)]
struct Faults {
    /// Drop one packet in `loss_every` (0: none).
    loss_every: u64,
    dup_every: u64,
    /// Hold one packet in `reorder_every` back until the next one.
    reorder_every: u64,
    cut: AtomicBool,
    /// Keeps both directions open after one driver exits, as the router does.
    keep_open: Mutex<Vec<Sender<Delivery>>>,
}

struct MemTransport {
    local: (String, String),
    rx: Receiver<Delivery>,
    to_peer: Sender<Delivery>,
    faults: Arc<Faults>,
    count: AtomicU64,
    held: Mutex<Option<Delivery>>,
}

impl MemTransport {
    fn deliver(&self, payload: Vec<u8>) -> Delivery {
        Delivery::Data {
            from_node: self.local.0.clone(),
            from_service: ServiceName::new(&self.local.1).unwrap(),
            payload: bytes::BytesMut::from(&payload[..]),
        }
    }
}

impl Transport for MemTransport {
    fn incoming(&self) -> &Receiver<Delivery> {
        &self.rx
    }

    fn send(&self, _to_node: &str, _to_service: &str, payload: Vec<u8>) {
        let f = &self.faults;
        if f.cut.load(Ordering::Relaxed) {
            return;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if f.loss_every > 0 && n.is_multiple_of(f.loss_every) {
            return;
        }
        if f.dup_every > 0 && n.is_multiple_of(f.dup_every) {
            let _ = self.to_peer.send(self.deliver(payload.clone()));
        }
        let mut held = self.held.lock().unwrap();
        if f.reorder_every > 0 && n.is_multiple_of(f.reorder_every) && held.is_none() {
            *held = Some(self.deliver(payload));
            return;
        }
        let _ = self.to_peer.send(self.deliver(payload));
        if let Some(h) = held.take() {
            let _ = self.to_peer.send(h);
        }
    }
}

fn pair(faults: Faults) -> (MemTransport, MemTransport, Arc<Faults>) {
    let faults = Arc::new(faults);
    let (a_tx, a_rx) = unbounded();
    let (b_tx, b_rx) = unbounded();
    let mk = |local: (&str, &str), rx, to_peer| MemTransport {
        local: (local.0.into(), local.1.into()),
        rx,
        to_peer,
        faults: faults.clone(),
        count: AtomicU64::new(0),
        held: Mutex::new(None),
    };
    faults
        .keep_open
        .lock()
        .unwrap()
        .extend([a_tx.clone(), b_tx.clone()]);
    let dialer = mk(("a", "Eph1x2y3"), a_rx, b_tx);
    let listener = mk(("b", "echo"), b_rx, a_tx);
    (dialer, listener, faults)
}

fn connect(faults: Faults, idle: Duration) -> (Stream, Stream, Listener, Arc<Faults>) {
    let (dt, lt, faults) = pair(faults);
    let listener = Listener::serve(lt, "test-listener", idle).unwrap();
    let client = dial_over(dt, "a", ("b", "echo"), Duration::from_secs(10), idle).unwrap();
    let server = listener
        .incoming()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    (client, server, listener, faults)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `data` each way at once and checks both sides get it exactly.
fn exchange_both_ways(client: Stream, server: Stream, len: usize) {
    let (c_data, s_data) = (pattern(len, 1), pattern(len, 2));
    let (c_send, s_send) = (c_data.clone(), s_data.clone());
    std::thread::scope(|s| {
        let (client, server) = (&client, &server);
        s.spawn(move || {
            let mut w = client;
            w.write_all(&c_send).unwrap();
            client.shutdown_write();
        });
        s.spawn(move || {
            let mut w = server;
            w.write_all(&s_send).unwrap();
            server.shutdown_write();
        });
        let got_by_server = s.spawn(move || {
            let mut v = Vec::new();
            let mut r = server;
            r.read_to_end(&mut v).unwrap();
            v
        });
        let mut got_by_client = Vec::new();
        let mut r = client;
        r.read_to_end(&mut got_by_client).unwrap();
        assert!(
            got_by_client == s_data,
            "client got {} bytes",
            got_by_client.len()
        );
        let got = got_by_server.join().unwrap();
        assert!(got == c_data, "server got {} bytes", got.len());
    });
}

#[test]
fn one_mebibyte_each_way_on_a_clean_pipe() {
    let (client, server, _l, _) = connect(Faults::default(), tls::IDLE_TIMEOUT);
    assert_eq!(server.peer_node(), "a");
    assert_eq!(client.peer_service(), "echo");
    exchange_both_ways(client, server, 1 << 20);
}

#[test]
fn one_mebibyte_each_way_despite_loss_duplicates_and_reordering() {
    let faults = Faults {
        loss_every: 17,
        dup_every: 13,
        reorder_every: 7,
        ..Faults::default()
    };
    let (client, server, _l, _) = connect(faults, tls::IDLE_TIMEOUT);
    exchange_both_ways(client, server, 1 << 20);
}

#[test]
fn half_close_is_seen_by_the_peer_and_the_reply_still_flows() {
    let (client, server, _l, _) = connect(Faults::default(), tls::IDLE_TIMEOUT);
    (&client).write_all(b"question").unwrap();
    client.shutdown_write();
    let mut asked = Vec::new();
    (&server).read_to_end(&mut asked).unwrap();
    assert_eq!(asked, b"question");
    assert!(
        (&client).write_all(b"more").is_err(),
        "no writes after shutdown"
    );
    (&server).write_all(b"answer").unwrap();
    drop(server);
    let mut answer = Vec::new();
    (&client).read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"answer");
}

#[test]
fn idle_timeout_fires_when_the_peer_goes_silent() {
    let idle = Duration::from_millis(600);
    let (client, server, _l, faults) = connect(Faults::default(), idle);
    faults.cut.store(true, Ordering::Relaxed);
    client.set_read_timeout(Some(Duration::from_secs(10)));
    let err = (&client).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        err.to_string().contains("no recent network activity"),
        "{err}"
    );
    let err = (&server).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[test]
fn a_slow_reader_gets_everything_after_the_writer_is_gone() {
    let (client, server, _l, _) = connect(Faults::default(), tls::IDLE_TIMEOUT);
    let data = pattern(4 << 20, 7);
    (&server).write_all(&data).unwrap();
    drop(server);
    // More than the pipe holds is now buffered in QUIC, and the writer's
    // side closes the connection once its data is acknowledged.
    std::thread::sleep(Duration::from_secs(2));
    let mut got = Vec::new();
    (&client).read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[test]
fn write_timeout_fires_when_the_peer_reads_nothing() {
    let (client, _server, _l, _) = connect(Faults::default(), tls::IDLE_TIMEOUT);
    client.set_write_timeout(Some(Duration::from_millis(300)));
    // Flow control (6 MiB stream window) plus both pipes fill up well
    // before 32 MiB while the server reads nothing.
    let chunk = vec![0u8; 1 << 20];
    let err = (0..32)
        .find_map(|_| (&client).write_all(&chunk).err())
        .expect("a write timed out");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn read_timeout_is_reported() {
    let (client, _server, _l, _) = connect(Faults::default(), tls::IDLE_TIMEOUT);
    client.set_read_timeout(Some(Duration::from_millis(50)));
    let err = (&client).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn dial_to_a_silent_service_times_out() {
    let (dt, _lt, _) = pair(Faults::default());
    let err = dial_over(
        dt,
        "a",
        ("b", "echo"),
        Duration::from_millis(300),
        tls::IDLE_TIMEOUT,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("timeout"), "{err}");
}
