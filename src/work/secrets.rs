//! Secret unit parameters (`secret_*`), kept out of plain text on disk.
//!
//! Go writes them into the unit's `status` file as they are. Here the
//! status file never sees them: they are sealed with AES-256-GCM into the
//! unit's own `secrets` file (0600) under a key this node makes once
//! (`<datadir>/<node>/.secrets.key`, 0600), and the file is removed as soon
//! as nothing needs it (a remote unit once the executor has it, any unit
//! when it is released). Why this design:
//!
//! * a status file is read by tools, copied into bug reports and kept in
//!   backups; a secret there leaks with it, and one in a separate sealed
//!   file does not (the key alone opens nothing once the unit is gone);
//! * restart recovery still works: a controller that restarts before its
//!   submit reached the executor unseals the secrets again;
//! * nothing new to configure, and no secret value lies in any file under
//!   the data directory at any moment.
//!
//! It does not defend against someone who can read the node's files while
//! the unit waits (they can read the key too); nothing on one host can.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::state::ExtraData;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The key file, in the node's directory of units.
const KEY_FILE: &str = ".secrets.key";
/// The sealed secrets of one unit, in its directory.
pub const SECRETS_FILE: &str = "secrets";

/// Takes the secret params out of a new unit's ExtraData, so the status
/// file never holds them; they go to [`Vault::seal`].
pub fn split(mut extra: ExtraData) -> (ExtraData, BTreeMap<String, String>) {
    let mut secrets = BTreeMap::new();
    if let ExtraData::Remote(r) = &mut extra {
        let params = std::mem::take(&mut r.remote_params);
        for (k, v) in params {
            if is_secret(&k) {
                secrets.insert(k, v);
            } else {
                r.remote_params.insert(k, v);
            }
        }
    }
    (extra, secrets)
}

/// Whether a submit parameter is a secret (Go's rule).
pub fn is_secret(key: &str) -> bool {
    key.to_lowercase().starts_with("secret_")
}

#[derive(Debug)]
pub enum VaultError {
    Io(PathBuf, io::Error),
    /// The file was changed, or sealed under another key.
    Corrupt(PathBuf),
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            VaultError::Corrupt(p) => write!(f, "{}: cannot be unsealed", p.display()),
        }
    }
}

impl std::error::Error for VaultError {}

/// This node's sealing key.
pub struct Vault {
    key: LessSafeKey,
}

impl Vault {
    /// Reads the node's key from `node_dir`, making it on first use.
    pub fn open(node_dir: &Path) -> Result<Vault, VaultError> {
        let path = node_dir.join(KEY_FILE);
        let io_err = |e| VaultError::Io(path.clone(), e);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(node_dir).map_err(io_err)?;
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io_err(io::Error::other(e)))?;
                create_key_once(&path, &key).map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| VaultError::Corrupt(path))?;
        Ok(Vault {
            key: LessSafeKey::new(key),
        })
    }

    /// Seals `secrets` into `unit_dir`'s secrets file.
    pub fn seal(
        &self,
        unit_dir: &Path,
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), VaultError> {
        let path = unit_dir.join(SECRETS_FILE);
        let io_err = |e| VaultError::Io(path.clone(), e);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| io_err(io::Error::other(e)))?;
        let mut sealed = serde_json::to_vec(secrets).map_err(|e| io_err(io::Error::other(e)))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| VaultError::Corrupt(path.clone()))?;
        let mut file = nonce.to_vec();
        file.extend_from_slice(&sealed);
        write_private(&path, &file).map_err(io_err)
    }

    /// The secrets sealed in `unit_dir`; none if there is no file.
    pub fn unseal(&self, unit_dir: &Path) -> Result<BTreeMap<String, String>, VaultError> {
        let path = unit_dir.join(SECRETS_FILE);
        let mut bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(VaultError::Io(path, e)),
        };
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Corrupt(path));
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes)
            .map_err(|_| VaultError::Corrupt(path.clone()))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| VaultError::Corrupt(path.clone()))?;
        serde_json::from_slice(plain).map_err(|_| VaultError::Corrupt(path))
    }

    /// Removes `unit_dir`'s secrets once nothing needs them.
    pub fn forget(unit_dir: &Path) {
        let _ = fs::remove_file(unit_dir.join(SECRETS_FILE));
    }
}

/// Makes the key file unless another thread or process got there first,
/// and returns the key in it. Units submitted at the same moment must not
/// each make their own key (the loser's secrets could never be unsealed),
/// nor read a key file half written: the key goes to a temporary file that
/// is then linked into place, which fails if the name exists.
fn create_key_once(path: &Path, key: &[u8]) -> io::Result<Vec<u8>> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", u64::from_ne_bytes(nonce)));
    write_private(&tmp, key)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key.to_vec()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::read(path),
        Err(e) => Err(e),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vault-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("unit")).unwrap();
        dir
    }

    /// Regression: units submitted at once each made a key, and the units
    /// sealed under the overwritten one could not be unsealed.
    #[test]
    fn concurrent_first_opens_share_one_key() {
        let dir = temp("race");
        let secrets = BTreeMap::from([("secret_x".to_string(), "y".to_string())]);
        let units: Vec<PathBuf> = (0..16)
            .map(|i| {
                let u = dir.join(format!("u{i}"));
                fs::create_dir_all(&u).unwrap();
                u
            })
            .collect();
        let start = std::sync::Barrier::new(units.len());
        std::thread::scope(|s| {
            for u in &units {
                let (dir, secrets, start) = (&dir, &secrets, &start);
                s.spawn(move || {
                    start.wait();
                    Vault::open(dir).unwrap().seal(u, secrets).unwrap()
                });
            }
        });
        let vault = Vault::open(&dir).unwrap();
        for u in &units {
            assert_eq!(vault.unseal(u).unwrap(), secrets);
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn sealed_secrets_are_not_in_the_file_and_come_back_after_a_reopen() {
        let dir = temp("roundtrip");
        let secrets = BTreeMap::from([("secret_token".to_string(), "hunter2-xyzzy".to_string())]);
        Vault::open(&dir)
            .unwrap()
            .seal(&dir.join("unit"), &secrets)
            .unwrap();
        let raw = fs::read(dir.join("unit").join(SECRETS_FILE)).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"hunter"));
        // A restarted daemon opens the same key.
        assert_eq!(
            Vault::open(&dir)
                .unwrap()
                .unseal(&dir.join("unit"))
                .unwrap(),
            secrets
        );
        use std::os::unix::fs::PermissionsExt;
        for f in [dir.join(KEY_FILE), dir.join("unit").join(SECRETS_FILE)] {
            assert_eq!(
                fs::metadata(&f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        Vault::forget(&dir.join("unit"));
        assert!(
            Vault::open(&dir)
                .unwrap()
                .unseal(&dir.join("unit"))
                .unwrap()
                .is_empty()
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_changed_file_or_another_key_is_refused() {
        let dir = temp("tamper");
        let unit = dir.join("unit");
        let secrets = BTreeMap::from([("secret_a".to_string(), "b".to_string())]);
        Vault::open(&dir).unwrap().seal(&unit, &secrets).unwrap();
        let path = unit.join(SECRETS_FILE);
        let mut raw = fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(
            Vault::open(&dir).unwrap().unseal(&unit),
            Err(VaultError::Corrupt(_))
        ));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Vault::open(&dir).unwrap().unseal(&unit),
            Err(VaultError::Corrupt(_))
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secret_keys_by_gos_rule() {
        assert!(is_secret("secret_x") && is_secret("SECRET_kube_config"));
        assert!(!is_secret("params") && !is_secret("kube_image"));
    }
}
