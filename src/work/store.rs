//! Unit directories under `<datadir>/<node>/<unit>/`: the `status` file,
//! its `status.lock`, and the `stdin` and `stdout` files (docs/work.md §2).
//!
//! A status change is a read-modify-write under an exclusive flock on
//! `status.lock` (so Go runners sharing the directory stay consistent),
//! or, for a status no other process writes, a write of the caller's
//! copy; either way it is written to a temporary file and renamed over
//! `status`, so a crash never leaves a half-written status behind.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::state::Status;

const UNIT_ID_LEN: usize = 8;

#[derive(Clone, Debug)]
pub struct UnitDir {
    path: PathBuf,
}

/// Why a status file could not be used.
#[derive(Debug)]
pub enum StatusError {
    Missing,
    Io(io::Error),
    Corrupt(String),
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusError::Missing => f.write_str("status file missing"),
            StatusError::Io(e) => write!(f, "{e}"),
            StatusError::Corrupt(e) => write!(f, "corrupt status file: {e}"),
        }
    }
}

impl UnitDir {
    /// Makes a new unit directory with a fresh random ID.
    pub fn create(node_dir: &Path) -> io::Result<(String, UnitDir)> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(node_dir)?;
        loop {
            let id = crate::random::alphanumeric(UNIT_ID_LEN);
            let path = node_dir.join(&id);
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok((id, UnitDir { path })),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn open(path: PathBuf) -> UnitDir {
        UnitDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stdin_path(&self) -> PathBuf {
        self.path.join("stdin")
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.path.join("stdout")
    }

    fn status_path(&self) -> PathBuf {
        self.path.join("status")
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Reads the status without locking: renames make every read whole.
    pub fn read(&self) -> Result<Status, StatusError> {
        let bytes = match fs::read(self.status_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StatusError::Missing),
            Err(e) => return Err(StatusError::Io(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StatusError::Corrupt(e.to_string()))
    }

    /// Writes a whole new status.
    pub fn write(&self, status: &Status) -> io::Result<()> {
        let _lock = self.lock()?;
        self.replace(status, true)
    }

    /// Applies `change` to the current status under the lock and returns
    /// the result. A missing or corrupt file starts from `fallback`.
    pub fn update(
        &self,
        fallback: &Status,
        change: impl FnOnce(&mut Status),
    ) -> io::Result<Status> {
        let _lock = self.lock()?;
        let Ok(mut status) = self.read() else {
            return self.change(fallback.clone(), change);
        };
        let before = status.clone();
        change(&mut status);
        // The file says this already (a runner that recorded its PID
        // before the daemon could): no write. A final status is written
        // anyway, as its write is the one synced to disk.
        if status == before && !status.is_final() {
            return Ok(status);
        }
        self.change(before, |s| *s = status)
    }

    /// As [`update`](Self::update), from `current` instead of the file,
    /// for a status only this process writes (remote units): the caller
    /// serializes its updates and holds the last one written, so neither
    /// the file's lock nor a read of it is needed.
    pub fn update_known(
        &self,
        current: &Status,
        change: impl FnOnce(&mut Status),
    ) -> io::Result<Status> {
        self.change(current.clone(), change)
    }

    fn change(&self, mut status: Status, change: impl FnOnce(&mut Status)) -> io::Result<Status> {
        let before = Lasting::of(&status);
        change(&mut status);
        let durable = Lasting::of(&status) != before || status.is_final();
        self.replace(&status, durable)?;
        Ok(status)
    }

    fn lock(&self) -> io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(self.path.join("status.lock"))?;
        f.lock()?;
        Ok(f)
    }

    /// Writes through a temporary file and a rename. `durable` changes
    /// (see [`Lasting`]) are synced to disk; progress-only ones (stdout
    /// size) are cheap to lose.
    fn replace(&self, status: &Status, durable: bool) -> io::Result<()> {
        let tmp = self.path.join(".status.tmp");
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&status.to_file_bytes())?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, self.status_path())?;
        if durable {
            File::open(&self.path)?.sync_all()?;
        }
        Ok(())
    }

    /// Deletes the unit directory and everything in it.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What of a status has to survive a power loss once written: the state,
/// and a remote unit's marks. Losing the executor's unit ID or the fact
/// it started would orphan the unit there; losing a cancel or release
/// would leave it running or kept.
#[derive(PartialEq)]
struct Lasting {
    state: i64,
    remote: Option<(String, bool, bool, bool)>,
}

impl Lasting {
    fn of(s: &Status) -> Lasting {
        Lasting {
            state: s.state,
            remote: s.remote().map(|r| {
                (
                    r.remote_unit_id.clone(),
                    r.remote_started,
                    r.local_cancelled,
                    r.local_released,
                )
            }),
        }
    }
}

/// The unit IDs with a directory under `node_dir`, sorted.
pub fn list_unit_ids(node_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(node_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::state::{ExtraData, SUCCEEDED};
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "receptor-store-{}",
            crate::random::alphanumeric(10)
        ));
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn create_write_update_read() {
        let root = scratch();
        let node_dir = root.join("node1");
        let (id, dir) = UnitDir::create(&node_dir).unwrap();
        assert_eq!(id.len(), 8);
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let st = Status::new("demo", None);
        dir.write(&st).unwrap();
        let file_mode = fs::metadata(dir.path().join("status"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        let done = dir
            .update(&st, |s| {
                s.set(SUCCEEDED, "exit status 0");
                s.stdout_size = 5;
            })
            .unwrap();
        assert_eq!(dir.read().unwrap(), done);
        assert_eq!(
            fs::read_to_string(dir.path().join("status")).unwrap(),
            "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":5,\"WorkType\":\"demo\",\"ExtraData\":null}\n"
        );
        assert_eq!(list_unit_ids(&node_dir), vec![id]);
        dir.remove().unwrap();
        assert!(list_unit_ids(&node_dir).is_empty());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing_unless_the_file_is_unreadable_or_final() {
        use std::os::unix::fs::MetadataExt;
        let root = scratch();
        let (_, dir) = UnitDir::create(&root).unwrap();
        let status = dir.path().join("status");
        let inode = || fs::metadata(&status).unwrap().ino();
        let st = Status::new("demo", None);
        dir.write(&st).unwrap();
        let written = inode();
        // Every write renames a new file over the old one.
        assert_eq!(dir.update(&st, |s| s.stdout_size = 0).unwrap(), st);
        assert_eq!(inode(), written);
        dir.update(&st, |s| s.stdout_size = 1).unwrap();
        assert_ne!(inode(), written);
        // A corrupt file is replaced by the fallback even when the change
        // leaves that as it is.
        fs::write(&status, b"{\"State\":1,\"Det").unwrap();
        assert_eq!(dir.update(&st, |_| {}).unwrap(), st);
        assert_eq!(dir.read().unwrap(), st);
        // A final status is written (and synced) again all the same.
        let done = dir
            .update(&st, |s| s.set(SUCCEEDED, "exit status 0"))
            .unwrap();
        let written = inode();
        assert_eq!(dir.update(&st, |_| {}).unwrap(), done);
        assert_ne!(inode(), written);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_known_status_is_written_over_whatever_the_file_holds() {
        let root = scratch();
        let (_, dir) = UnitDir::create(&root).unwrap();
        // A valid file that differs from what we know, then a corrupt one:
        // neither is read.
        let mut other = Status::new("remote", None);
        other.stdout_size = 99;
        other.state = 2;
        dir.write(&other).unwrap();
        let known = Status::new("remote", None);
        let st = dir.update_known(&known, |s| s.stdout_size = 7).unwrap();
        assert_eq!((st.state, st.stdout_size), (known.state, 7));
        assert_eq!(dir.read().unwrap(), st);
        fs::write(dir.path().join("status"), b"{\"State\":1,\"Det").unwrap();
        let st = dir.update_known(&st, |s| s.stdout_size = 8).unwrap();
        assert_eq!(dir.read().unwrap(), st);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_remote_units_marks_are_lasting_and_its_progress_is_not() {
        let extra = crate::work::state::RemoteExtra::unsent("n2", "demo");
        let st = Status::new("remote", Some(ExtraData::Remote(extra)));
        let changed = |change: fn(&mut Status)| {
            let mut after = st.clone();
            change(&mut after);
            Lasting::of(&after) != Lasting::of(&st)
        };
        assert!(!changed(|s| s.stdout_size = 9));
        assert!(!changed(|s| s.detail = "Running".into()));
        assert!(changed(|s| s.state = 1));
        assert!(changed(|s| {
            let r = s.remote_mut().unwrap();
            r.remote_unit_id = "j4bLSmVp".into();
            r.remote_started = true;
        }));
        assert!(changed(|s| s.remote_mut().unwrap().local_cancelled = true));
        assert!(changed(|s| s.remote_mut().unwrap().local_released = true));
    }

    #[test]
    fn corrupt_and_missing_status_are_reported() {
        let root = scratch();
        let (_, dir) = UnitDir::create(&root).unwrap();
        assert!(matches!(dir.read(), Err(StatusError::Missing)));
        fs::write(dir.path().join("status"), b"{\"State\":1,\"Det").unwrap();
        assert!(matches!(dir.read(), Err(StatusError::Corrupt(_))));
        // An update recovers from the fallback.
        let fallback = Status::new("demo", Some(ExtraData::Other(serde_json::json!({"x": 1}))));
        let st = dir
            .update(&fallback, |s| s.detail = "fixed".into())
            .unwrap();
        assert_eq!(st.detail, "fixed");
        fs::remove_dir_all(root).unwrap();
    }
}
