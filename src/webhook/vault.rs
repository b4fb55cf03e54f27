//! Endpoint secrets at rest. A webhook secret must stay usable (HMAC signs
//! with the secret itself), so it cannot be hashed like a token; it is
//! encrypted with XChaCha20-Poly1305 under a 32-byte key kept in a file
//! outside the database (`[webhooks] key_file`, mode 0600). A copy of the
//! database alone does not reveal any secret. The endpoint's id is the
//! associated data, so a sealed secret only opens for its own endpoint.

use crate::error::Error;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const NONCE_BYTES: usize = 24;

pub struct Vault {
    path: PathBuf,
    key: Mutex<Option<[u8; 32]>>,
}

/// 503 naming the key file and what to do.
fn unavailable(message: String) -> Error {
    Error::Overloaded {
        code: "webhook_key_unavailable",
        message,
    }
}

impl Vault {
    pub fn new(path: PathBuf) -> Vault {
        Vault {
            path,
            key: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key, read from the file (or, with `create`, written to a new
    /// file when there is none).
    fn key(&self, create: bool) -> Result<[u8; 32], Error> {
        let mut cached = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = *cached {
            return Ok(key);
        }
        let key = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse_key(&text).ok_or_else(|| {
                unavailable(format!(
                    "{} is not a webhook key (64 hex digits); restore it from the backup made with the database",
                    self.path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => self.create()?,
            Err(e) => {
                return Err(unavailable(format!(
                    "cannot read the webhook key {}: {e}; restore it from the backup made with the database, or delete and re-create the endpoints",
                    self.path.display()
                )))
            }
        };
        *cached = Some(key);
        Ok(key)
    }

    fn create(&self) -> Result<[u8; 32], Error> {
        let hex = crate::auth::random_hex();
        let key = parse_key(&hex)
            .ok_or_else(|| Error::Internal("random_hex is not 32 bytes of hex".into()))?;
        match write_private(&self.path, format!("{hex}\n").as_bytes()) {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), "created the webhook secret key; back it up with the database");
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&self.path).unwrap_or_default();
                parse_key(&text).ok_or_else(|| {
                    unavailable(format!("{} is not a webhook key", self.path.display()))
                })
            }
            Err(e) => Err(unavailable(format!(
                "cannot create the webhook key {}: {e}; check that the directory is writable by this user, or set [webhooks] key_file",
                self.path.display()
            ))),
        }
    }

    /// Copies the key file (if there is one) to `dest`, a new file only its
    /// owner can read: `clawrelay backup` keeps it with the database copy.
    /// Returns whether there was a key to copy.
    pub fn copy_to(&self, dest: &Path) -> std::io::Result<bool> {
        match std::fs::read(&self.path) {
            Ok(bytes) => write_private(dest, &bytes).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Encrypts an endpoint's secret (creating the key file if needed).
    pub fn seal(&self, endpoint: &str, secret: &[u8]) -> Result<Vec<u8>, Error> {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let cipher = XChaCha20Poly1305::new(&self.key(true)?.into());
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("encrypting a webhook secret failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Decrypts an endpoint's secret.
    pub fn open(&self, endpoint: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let cipher = XChaCha20Poly1305::new(&self.key(false)?.into());
        if sealed.len() < NONCE_BYTES {
            return Err(unavailable(format!(
                "the stored secret of {endpoint} is damaged; rotate it"
            )));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| {
                unavailable(format!(
                    "the secret of {endpoint} does not open with the key in {}: it was sealed under another key; restore that key file or rotate the secret",
                    self.path.display()
                ))
            })
    }
}

/// Writes `bytes` to `path`, a new file (never replacing one) with mode 0600,
/// synced to disk.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_only_for_its_endpoint_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("k"));
        let sealed = vault.seal("wh_a", b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(vault.open("wh_a", &sealed).unwrap(), b"secret");
        assert!(vault.open("wh_b", &sealed).is_err());
        // The key survives in the file, mode 0600.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Vault::new(dir.path().join("k"));
        assert_eq!(again.open("wh_a", &sealed).unwrap(), b"secret");
        // Another key does not open it, and opening never creates a key.
        let other = Vault::new(dir.path().join("other"));
        assert!(other.open("wh_a", &sealed).is_err());
        assert!(!dir.path().join("other").exists());
    }
}
