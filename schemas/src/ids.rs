//! Pseudonymous identifiers. No citizen's request or complaint number leaves the office: the
//! producer replaces it by a keyed hash (HMAC-SHA256 with a per-deployment secret), so the same
//! request always maps to the same id and nobody without the secret can reverse or test it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// Namespace of content-derived event ids (UUID v5), fixed forever: changing it would make a
/// re-imported file count twice.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f77_7375_2d65_7665_6e74_2d69_6473_0001);

/// Keyed hashing of office identifiers.
#[derive(Clone)]
pub struct IdHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(<secret>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the id secret is {len} bytes; at least 16 are needed so pseudonyms cannot be guessed")]
pub struct WeakSecret {
    pub len: usize,
}

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("reading the secret file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret file {path} is readable by group or others (mode {mode:04o}): anyone on the \
         machine could read the deployment's secret; run `chmod 600 {path}`"
    )]
    Exposed { path: std::path::PathBuf, mode: u32 },
}

/// Reads a secret file, refusing one that group or others may read (Unix permissions).
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut out).map_err(io)?;
    Ok(out)
}

/// Writes a secret file readable by its owner only (created with mode 0600, so it is never
/// readable by others even for an instant).
pub fn write_secret_file(path: &std::path::Path, secret: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        // An existing file keeps its mode through `open`: set it.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    std::io::Write::write_all(&mut o.open(path)?, secret)
}

impl IdHasher {
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        let trimmed = secret.trim_ascii();
        if trimmed.len() < 16 {
            return Err(WeakSecret { len: trimmed.len() });
        }
        Ok(IdHasher {
            key: trimmed.to_vec(),
        })
    }

    /// 32 hex characters (128 bits) of HMAC-SHA256 over `unit_code`, a separator and the
    /// office's own number: office numbers repeat across offices, pseudonyms must not.
    pub fn pseudonymise(&self, unit_code: &str, office_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(unit_code.as_bytes());
        mac.update(&[0x1f]);
        mac.update(office_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// A deterministic event id from a record's canonical content (same record, same id).
pub fn derive_event_id(canonical_content: &str) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, canonical_content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_per_unit() {
        let a = IdHasher::new(b"0123456789abcdef-secret").unwrap();
        let b = IdHasher::new(b"another-deployment-secret").unwrap();
        assert_eq!(
            a.pseudonymise("KH-01", "REQ-1"),
            a.pseudonymise("KH-01", "REQ-1")
        );
        assert_ne!(
            a.pseudonymise("KH-01", "REQ-1"),
            b.pseudonymise("KH-01", "REQ-1")
        );
        assert_ne!(
            a.pseudonymise("KH-01", "REQ-1"),
            a.pseudonymise("KH-02", "REQ-1")
        );
        assert!(!a.pseudonymise("KH-01", "REQ-1").contains("REQ"));
        assert!(IdHasher::new(b"short").is_err());
    }

    #[test]
    fn derived_ids_are_deterministic() {
        assert_eq!(derive_event_id("x"), derive_event_id("x"));
        assert_ne!(derive_event_id("x"), derive_event_id("y"));
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_secret_file(&p, b"0123456789abcdef0123").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret_file(&p).unwrap(), b"0123456789abcdef0123");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        // Rewriting it makes it private again.
        write_secret_file(&p, b"0123456789abcdef0123").unwrap();
        assert!(read_secret_file(&p).is_ok());
    }
}
