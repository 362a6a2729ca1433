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
}
