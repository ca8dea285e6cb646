//! The results stream of a remote unit: a thread that appends the
//! executor's stdout to ours from our current size until the stream ends,
//! and takes the final status it may end with (`work::trailer`).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{debug, error};

use super::Dialer;
use super::client::ClientError;
use super::{adopt, local_size};
use crate::work::Unit;
use crate::work::state::RemoteExtra;

/// A results stream silent this long while the executor reports more
/// output than we have is stalled: reconnect.
const RESULTS_STALL: Duration = Duration::from_secs(2);
/// How long a stream that brought nothing waits before it ends, so the
/// monitor does not redial it at once and spin.
const EMPTY_PAUSE: Duration = Duration::from_millis(250);

/// Streams the output in a thread that clears `busy` and wakes the
/// unit's watchers when it ends.
pub fn spawn_fetcher(dialer: &Dialer, unit: &Arc<Unit>, r: &RemoteExtra, busy: Arc<AtomicBool>) {
    let (unit, r, dialer) = (unit.clone(), r.clone(), dialer.clone());
    let started = crate::workers::spawn(format!("results-{}", unit.id), move || {
        let before = local_size(&unit);
        if let Err(e) = fetch(&dialer, &unit, &r) {
            debug!("[{}] Results stream ended: {e}", unit.id);
        }
        if local_size(&unit) == before {
            std::thread::sleep(EMPTY_PAUSE);
        }
        busy.store(false, Ordering::SeqCst);
        unit.notify();
    });
    if let Err(e) = started {
        error!("Cannot start results fetcher: {e}");
    }
}

/// Appends the executor's stdout from our current size until its stream
/// ends, or until it stalls while more output is known to exist. A final
/// status at the end is ours once the output it counts is written.
fn fetch(dialer: &Dialer, unit: &Unit, r: &RemoteExtra) -> Result<(), ClientError> {
    let start = local_size(unit);
    let mut results = dialer.results(r, start, RESULTS_STALL)?;
    let mut out = open_stdout(unit)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match results.read(&mut buf) {
            Ok(0) => {
                if let Some(status) = results.status() {
                    debug!("[{}] Results stream ended with the unit's status", unit.id);
                    adopt(unit, status);
                }
                return Ok(());
            }
            Ok(n) => {
                out.write_all(&buf[..n])?;
                unit.notify();
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                let behind =
                    local_size(unit) < u64::try_from(unit.status().stdout_size).unwrap_or(0);
                if behind {
                    return Err(ClientError::Link("results stream stalled".into()));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn open_stdout(unit: &Unit) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(unit.dir.stdout_path())
}
