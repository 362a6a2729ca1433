//! Signed events. Kafka's ACLs say who may write a topic, not which unit's events a client
//! writes; the signature does. Each office holds an Ed25519 key pair; the producer signs the
//! exact Avro bytes of every event and sends the signature in the message header [`HEADER`];
//! the aggregator, when signatures are required, checks it against the public keys the
//! reference data (`keys.csv`) lists for the event's `unit_code`, valid at the message's time,
//! so keys can be rotated (two valid at once) and revoked (`valid_until`).
//!
//! The header value is `<key id>.<signature>`: the key id is the first 8 bytes of SHA-256 of the
//! public key, in hex; the signature 64 bytes in hex. A private key file holds
//! `owsu-office-key v1`, `unit=<code>` and `seed=<64 hex digits>` on three lines, mode 0600.
//!
//! [`PublicKeys::verify`] accepts a signature only when it is over the exact bytes, by a key
//! listed for the event's own unit, and that key is valid at the given instant.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::time::Millis;

/// Kafka header carrying an event's signature.
pub const HEADER: &str = "owsu-signature";

const KEY_FILE_MAGIC: &str = "owsu-office-key v1";

/// Hex id of a public key (first 8 bytes of its SHA-256).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// An office's private key, for the unit it signs for. `Debug` shows the unit and key id only.
#[derive(Clone)]
pub struct OfficeKey {
    unit: String,
    key: SigningKey,
    /// [`key_id`] of the public key, computed once (it goes into every signature).
    id: String,
}

impl std::fmt::Debug for OfficeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OfficeKey({}, {}, <private>)", self.unit, self.key_id())
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read, or group or others may read it.
    #[error(transparent)]
    Secret(#[from] crate::ids::SecretFileError),
    /// The file (or a key directory) does not hold what it should.
    #[error("{path}: not an office key file ({problem})")]
    Format {
        /// The key file, or the key directory.
        path: std::path::PathBuf,
        /// What is wrong, in a few words.
        problem: &'static str,
    },
    /// [`OfficeKey::write`] was given a path that already exists.
    #[error("{path} exists: a key is never overwritten (rotate by writing a new file)")]
    Exists {
        /// The existing file.
        path: std::path::PathBuf,
    },
    /// A key file could not be written, or a key directory could not be listed.
    #[error("writing {path}: {source}")]
    Io {
        /// The key file, or the key directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl OfficeKey {
    /// A new key pair for `unit`, from the operating system's random source.
    pub fn generate(unit: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::from_seed(unit, &seed)
    }

    fn from_seed(unit: &str, seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        OfficeKey {
            unit: unit.to_owned(),
            id: key_id(&key.verifying_key()),
            key,
        }
    }

    /// The unit code this key signs for.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The Ed25519 public key of this key pair.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as 64 lowercase hex digits (the `public_key` column of `keys.csv`).
    pub fn public_hex(&self) -> String {
        hex::encode(self.public_key().as_bytes())
    }

    /// The [`key_id`] of the public key (16 hex digits).
    pub fn key_id(&self) -> String {
        self.id.clone()
    }

    /// The [`HEADER`] value for `payload` (the exact bytes sent).
    pub fn sign(&self, payload: &[u8]) -> String {
        format!(
            "{}.{}",
            self.id,
            hex::encode(self.key.sign(payload).to_bytes())
        )
    }

    /// Writes the key to a new file readable by its owner only (mode 0600 on Unix).
    /// Fails with [`KeyFileError::Exists`] when `path` exists: a key is never overwritten.
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        if path.exists() {
            return Err(KeyFileError::Exists {
                path: path.to_owned(),
            });
        }
        let text = format!(
            "{KEY_FILE_MAGIC}\nunit={}\nseed={}\n",
            self.unit,
            hex::encode(self.key.to_bytes())
        );
        crate::ids::write_secret_file(path, text.as_bytes()).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a key file (refused when group or others may read it). The `unit=` value is
    /// taken as written, not checked against the registry.
    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let bytes = crate::ids::read_secret_file(path)?;
        let bad = |problem| KeyFileError::Format {
            path: path.to_owned(),
            problem,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_MAGIC) {
            return Err(bad("first line is not `owsu-office-key v1`"));
        }
        let unit = lines
            .next()
            .and_then(|l| l.strip_prefix("unit="))
            .ok_or(bad("no `unit=` line"))?;
        let seed: [u8; 32] = lines
            .next()
            .and_then(|l| l.strip_prefix("seed="))
            .and_then(|h| hex::decode(h.trim()).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(bad("no `seed=` line of 64 hex digits"))?;
        Ok(Self::from_seed(unit, &seed))
    }
}

impl OfficeKey {
    /// The `keys.csv` line that publishes this key, valid from `from` with no end.
    pub fn keys_csv_line(&self, from: chrono::NaiveDate) -> String {
        format!("{},{},{from},", self.unit, self.public_hex())
    }
}

/// The private keys a publisher signs with, by unit: one office's key, or (for a provincial
/// gateway that relays its districts, or the demo that plays all 228 offices) a directory of
/// them. An event of a unit with no key here is not sent: nothing leaves unsigned by accident.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    by_unit: std::collections::HashMap<String, OfficeKey>,
}

impl Keyring {
    /// A keyring of one office's key.
    pub fn single(key: OfficeKey) -> Self {
        let mut k = Keyring::default();
        k.insert(key);
        k
    }

    /// Adds `key`; a later key of the same unit replaces the earlier one.
    pub fn insert(&mut self, key: OfficeKey) {
        self.by_unit.insert(key.unit.clone(), key);
    }

    /// Reads every `*.key` file of `dir` (each refused when group or others may read it).
    /// Fails when the directory holds no key file, or two different keys of one unit.
    pub fn read_dir(dir: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "key"));
        paths.sort();
        let mut ring = Keyring::default();
        for p in paths {
            let key = OfficeKey::read(&p)?;
            if let Some(other) = ring.by_unit.get(key.unit()) {
                if other.key_id() != key.key_id() {
                    return Err(KeyFileError::Format {
                        path: p,
                        problem: "a second key of a unit already in this directory",
                    });
                }
            }
            ring.insert(key);
        }
        if ring.by_unit.is_empty() {
            return Err(KeyFileError::Format {
                path: dir.to_owned(),
                problem: "no *.key file in this directory",
            });
        }
        Ok(ring)
    }

    /// The key that signs `unit`'s events.
    pub fn get(&self, unit: &str) -> Option<&OfficeKey> {
        self.by_unit.get(unit)
    }

    /// Units this keyring signs for, sorted.
    pub fn units(&self) -> Vec<&str> {
        let mut u: Vec<&str> = self.by_unit.keys().map(String::as_str).collect();
        u.sort_unstable();
        u
    }
}

/// A unit's public key and when it may sign.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The unit whose events this key may sign.
    pub unit_code: String,
    /// The [`key_id`] of `key`.
    pub key_id: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
    /// Valid from this instant on (UTC milliseconds, inclusive).
    pub valid_from: Millis,
    /// Revoked or retired from this instant on (exclusive); `None`: no end.
    pub valid_until: Option<Millis>,
}

/// Every unit's public keys (`keys.csv`), found by key id.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    keys: Vec<PublicKey>,
    /// Positions in `keys` by key id (a key id can, in theory, be shared).
    by_id: std::collections::HashMap<String, Vec<usize>>,
}

/// Why an event's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The message has no signature header.
    #[error("unsigned: no `{HEADER}` header")]
    Unsigned,
    /// The header is not UTF-8 `<key id>.<128 hex digits>`.
    #[error("malformed `{HEADER}` header (expected <key id>.<128 hex digits>)")]
    Malformed,
    /// No listed public key has this key id (the value).
    #[error("signed with key {0}, which no unit holds")]
    UnknownKey(String),
    /// The key id is listed, but only for another unit.
    #[error("signed with key {key_id} of unit {owner}, not of {unit} whose event it is")]
    OtherUnitsKey {
        /// The key id in the header.
        key_id: String,
        /// A unit the key is listed for.
        owner: String,
        /// The event's unit.
        unit: String,
    },
    /// The unit's key is not valid at the instant checked.
    #[error("signed with key {key_id} of {unit}, not valid at the message's time (revoked, retired or not yet valid)")]
    NotValid {
        /// The key id in the header.
        key_id: String,
        /// The event's unit.
        unit: String,
    },
    /// The signature does not verify over the payload with the unit's key.
    #[error("signature does not match the message (altered after signing, or forged)")]
    BadSignature,
}

impl PublicKeys {
    /// Indexes `keys` by key id; the order of `keys` is kept.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        let mut by_id: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, k) in keys.iter().enumerate() {
            by_id.entry(k.key_id.clone()).or_default().push(i);
        }
        PublicKeys { keys, by_id }
    }

    /// True when no key is listed (then no signature can verify).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every listed key, in the order given to [`PublicKeys::new`].
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// Checks `header` (the [`HEADER`] value) over `payload` for an event of `unit` sent at `at`
    /// (UTC milliseconds). The key must have the header's key id, be listed for `unit`, and
    /// be valid at `at` (`valid_from <= at < valid_until`). Each failure is its own
    /// [`SignatureError`], checked in the order of that enum.
    pub fn verify(
        &self,
        unit: &str,
        payload: &[u8],
        header: Option<&[u8]>,
        at: Millis,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Unsigned)?;
        let text = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
        let (id, sig) = text.split_once('.').ok_or(SignatureError::Malformed)?;
        let sig: [u8; 64] = hex::decode(sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::Malformed)?;
        let candidates = self.by_id.get(id).map(Vec::as_slice).unwrap_or_default();
        let Some(first) = candidates.first().map(|&i| &self.keys[i]) else {
            return Err(SignatureError::UnknownKey(id.to_owned()));
        };
        let Some(k) = candidates
            .iter()
            .map(|&i| &self.keys[i])
            .find(|k| k.unit_code == unit)
        else {
            return Err(SignatureError::OtherUnitsKey {
                key_id: id.to_owned(),
                owner: first.unit_code.clone(),
                unit: unit.to_owned(),
            });
        };
        if at < k.valid_from || k.valid_until.is_some_and(|u| at >= u) {
            return Err(SignatureError::NotValid {
                key_id: id.to_owned(),
                unit: unit.to_owned(),
            });
        }
        k.key
            .verify(payload, &Signature::from_bytes(&sig))
            .map_err(|_| SignatureError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(a: &OfficeKey, b: &OfficeKey, revoked: &OfficeKey) -> PublicKeys {
        let entry = |k: &OfficeKey, until: Option<Millis>| PublicKey {
            unit_code: k.unit().to_owned(),
            key_id: k.key_id(),
            key: k.public_key(),
            valid_from: 0,
            valid_until: until,
        };
        PublicKeys::new(vec![
            entry(a, None),
            entry(b, None),
            entry(revoked, Some(1_000)),
        ])
    }

    #[test]
    fn only_the_units_own_valid_key_over_the_exact_bytes_verifies() {
        let a = OfficeKey::generate("KH-0101");
        let b = OfficeKey::generate("KH-0102");
        let old = OfficeKey::generate("KH-0101");
        let k = keys(&a, &b, &old);
        let msg = b"exact avro bytes";
        let at = 5_000;
        let h = a.sign(msg);
        assert_eq!(k.verify("KH-0101", msg, Some(h.as_bytes()), at), Ok(()));
        assert_eq!(
            k.verify("KH-0101", b"exact avro bytez", Some(h.as_bytes()), at),
            Err(SignatureError::BadSignature)
        );
        assert!(matches!(
            k.verify("KH-0101", msg, Some(b.sign(msg).as_bytes()), at),
            Err(SignatureError::OtherUnitsKey { .. })
        ));
        assert_eq!(
            k.verify("KH-0101", msg, None, at),
            Err(SignatureError::Unsigned)
        );
        assert!(matches!(
            k.verify("KH-0101", msg, Some(old.sign(msg).as_bytes()), at),
            Err(SignatureError::NotValid { .. })
        ));
        assert_eq!(
            k.verify("KH-0101", msg, Some(old.sign(msg).as_bytes()), 500),
            Ok(())
        );
        assert_eq!(
            k.verify("KH-0101", msg, Some(b"zz"), at),
            Err(SignatureError::Malformed)
        );
        let stranger = OfficeKey::generate("KH-0101");
        assert!(matches!(
            k.verify("KH-0101", msg, Some(stranger.sign(msg).as_bytes()), at),
            Err(SignatureError::UnknownKey(_))
        ));
    }

    #[test]
    fn key_files_are_private_never_overwritten_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("office.key");
        let a = OfficeKey::generate("KH-0101");
        a.write(&p).unwrap();
        let back = OfficeKey::read(&p).unwrap();
        assert_eq!((back.unit(), back.public_hex()), (a.unit(), a.public_hex()));
        assert!(matches!(a.write(&p), Err(KeyFileError::Exists { .. })));
        let seed = hex::encode(a.key.to_bytes());
        assert!(!format!("{a:?}").contains(&seed));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(OfficeKey::read(&p).is_err());
        }
    }

    #[test]
    fn a_key_directory_signs_each_unit_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keyring::read_dir(dir.path()).is_err(), "no key: refused");
        let (a, b) = (
            OfficeKey::generate("KH-0101"),
            OfficeKey::generate("KH-0102"),
        );
        a.write(&dir.path().join("KH-0101.key")).unwrap();
        b.write(&dir.path().join("KH-0102.key")).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let ring = Keyring::read_dir(dir.path()).unwrap();
        assert_eq!(ring.units(), ["KH-0101", "KH-0102"]);
        assert_eq!(ring.get("KH-0102").unwrap().key_id(), b.key_id());
        assert!(ring.get("KH-0103").is_none());
        // Two different keys of one unit: which would sign is ambiguous, so refused.
        OfficeKey::generate("KH-0101")
            .write(&dir.path().join("KH-0101-new.key"))
            .unwrap();
        let e = Keyring::read_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("second key"), "{e}");
    }
}
