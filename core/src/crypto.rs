//! Encryption of generated environment credentials at rest: AES-256-GCM with keys from
//! configuration, a random 96-bit nonce per secret, the environment id as associated data (so
//! a ciphertext cannot be moved to another environment's row), and the sealing key's id beside
//! each ciphertext, so the key can be rotated.
//!
//! Formats: a row with a key id (format 1) opens only with that key; a row without one was
//! sealed before key ids existed (format 0) and opens with whichever configured key fits
//! (AES-GCM refuses every other key). `bulkhead reseal` moves every row to the current key.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "BULKHEAD_CREDENTIALS_KEY must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`"
    )]
    BadKey,
    #[error(
        "BULKHEAD_CREDENTIALS_KEYS: key {0} of the list is not 64 hex characters; give older keys as hex, separated by commas"
    )]
    BadOlderKey(usize),
    #[error(
        "a stored credential was sealed with key {0}, which is neither BULKHEAD_CREDENTIALS_KEY nor in BULKHEAD_CREDENTIALS_KEYS"
    )]
    UnknownKey(String),
    #[error(
        "a stored credential could not be decrypted: wrong BULKHEAD_CREDENTIALS_KEY, or the row was altered"
    )]
    Decrypt,
}

/// A 256-bit key that seals credentials, and its id: the first 16 hex characters of a SHA-256
/// of the key, so an id always names the same key and reveals nothing of it.
#[derive(Clone)]
pub struct CredentialsKey {
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialsKey({}, <redacted>)", self.id)
    }
}

/// A sealed secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key that sealed it; `None` for secrets sealed before key ids.
    pub key_id: Option<String>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl CredentialsKey {
    pub fn from_hex(raw: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(raw.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        let mut digest = Sha256::new();
        digest.update(b"bulkhead credentials key id\0");
        digest.update(key);
        let id = hex::encode(&digest.finalize()[..8]);
        Ok(Self { id, key })
    }

    /// The key's id, stored beside everything it seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Result<Aes256Gcm, CryptoError> {
        Aes256Gcm::new_from_slice(&self.key).map_err(|_| CryptoError::BadKey)
    }

    pub fn seal(&self, plaintext: &str, associated: &[u8]) -> Result<Sealed, CryptoError> {
        let nonce = Nonce::generate();
        let ciphertext = self
            .cipher()?
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: associated,
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Sealed {
            key_id: Some(self.id.clone()),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens `sealed` with this key, whatever key id it carries.
    fn open_unchecked(&self, sealed: &Sealed, associated: &[u8]) -> Result<String, CryptoError> {
        let nonce = Nonce::try_from(sealed.nonce.as_slice()).map_err(|_| CryptoError::Decrypt)?;
        let plaintext = self
            .cipher()?
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed.ciphertext,
                    aad: associated,
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Decrypt)
    }
}

/// The current key, which seals, and older keys, which only open what they sealed.
#[derive(Clone)]
pub struct Keyring {
    current: CredentialsKey,
    older: Vec<CredentialsKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("older", &self.older)
            .finish()
    }
}

impl Keyring {
    /// `current` seals; `older` keys open; an older key equal to the current one is dropped.
    pub fn new(current: CredentialsKey, older: Vec<CredentialsKey>) -> Self {
        let mut kept: Vec<CredentialsKey> = Vec::with_capacity(older.len());
        for key in older {
            if key.id != current.id && kept.iter().all(|k| k.id != key.id) {
                kept.push(key);
            }
        }
        Self {
            current,
            older: kept,
        }
    }

    /// `BULKHEAD_CREDENTIALS_KEY` (64 hex characters) and `BULKHEAD_CREDENTIALS_KEYS` (older
    /// keys in the same form, separated by commas; whitespace is ignored).
    pub fn from_hex(current: &str, older: Option<&str>) -> Result<Self, CryptoError> {
        let current = CredentialsKey::from_hex(current)?;
        let older = older
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|raw| !raw.is_empty())
            .enumerate()
            .map(|(at, raw)| {
                CredentialsKey::from_hex(&raw.replace(' ', ""))
                    .map_err(|_| CryptoError::BadOlderKey(at + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(current, older))
    }

    /// The key new seals use.
    pub fn current(&self) -> &CredentialsKey {
        &self.current
    }

    /// The older keys' ids, in configuration order.
    pub fn older_ids(&self) -> Vec<&str> {
        self.older.iter().map(CredentialsKey::id).collect()
    }

    /// Seals with the current key.
    pub fn seal(&self, plaintext: &str, associated: &[u8]) -> Result<Sealed, CryptoError> {
        self.current.seal(plaintext, associated)
    }

    /// Opens with the key `sealed` names, or, for a secret sealed before key ids, with
    /// whichever key fits (the current one first).
    pub fn open(&self, sealed: &Sealed, associated: &[u8]) -> Result<String, CryptoError> {
        let mut keys = std::iter::once(&self.current).chain(&self.older);
        match &sealed.key_id {
            Some(id) => keys
                .find(|key| &key.id == id)
                .ok_or_else(|| CryptoError::UnknownKey(id.clone()))?
                .open_unchecked(sealed, associated),
            None => keys
                .find_map(|key| key.open_unchecked(sealed, associated).ok())
                .ok_or(CryptoError::Decrypt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NEW: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn ring(current: &str, older: &str) -> Keyring {
        Keyring::from_hex(current, Some(older)).expect("keyring")
    }

    #[test]
    fn round_trips_and_binds_to_the_environment() {
        let keys = ring(KEY, "");
        let sealed = keys.seal("s3cret", b"env-a").expect("seal");
        assert_ne!(sealed.ciphertext, b"s3cret");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(sealed.key_id.as_deref(), Some(keys.current().id()));
        assert_eq!(keys.open(&sealed, b"env-a").expect("open"), "s3cret");
        assert!(keys.open(&sealed, b"env-b").is_err());
        assert_ne!(
            keys.seal("s3cret", b"env-a").expect("seal").nonce,
            sealed.nonce
        );
    }

    #[test]
    fn key_ids_name_keys_and_reveal_nothing() {
        let key = CredentialsKey::from_hex(KEY).expect("key");
        assert_eq!(key.id().len(), 16);
        assert_eq!(key.id(), CredentialsKey::from_hex(KEY).expect("key").id());
        assert_ne!(key.id(), CredentialsKey::from_hex(NEW).expect("key").id());
        assert!(!KEY.contains(key.id()));
        let shown = format!("{:?}", ring(NEW, KEY));
        assert!(!shown.contains(KEY) && !shown.contains(NEW), "{shown}");
        assert!(!shown.contains("[0, 1, 2"), "{shown}");
    }

    #[test]
    fn older_keys_open_what_they_sealed_and_only_that() {
        let old = ring(KEY, "");
        let sealed = old.seal("s3cret", b"env-a").expect("seal");
        // Rotated: the new key seals, the old one still opens its own rows.
        let rotated = ring(NEW, &format!(" {KEY} ,"));
        assert_eq!(rotated.older_ids(), [old.current().id()]);
        assert_eq!(rotated.open(&sealed, b"env-a").expect("open"), "s3cret");
        let resealed = rotated.seal("s3cret", b"env-a").expect("seal");
        assert_eq!(resealed.key_id.as_deref(), Some(rotated.current().id()));
        assert!(old.open(&resealed, b"env-a").is_err());
        // The old key removed: its rows name a key nobody has.
        let err = ring(NEW, "").open(&sealed, b"env-a").expect_err("gone");
        assert!(matches!(err, CryptoError::UnknownKey(ref id) if id == old.current().id()));
        // A key id that does not match the ciphertext's key fails, without trying others.
        let lying = Sealed {
            key_id: Some(rotated.current().id().to_owned()),
            ..sealed
        };
        assert!(matches!(
            rotated.open(&lying, b"env-a"),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn secrets_sealed_before_key_ids_still_open() {
        // Format 0: a row as the previous version stored it (nonce and ciphertext, no key id),
        // made outside this code: AES-256-GCM of "s3cret" under KEY with "env-a" as AAD.
        let legacy = Sealed {
            key_id: None,
            nonce: hex::decode("a1a2a3a4a5a6a7a8a9aaabac").expect("hex"),
            ciphertext: hex::decode("55dce41d9121a5f261cf77e9938463ec934681a1f230").expect("hex"),
        };
        assert_eq!(
            ring(KEY, "").open(&legacy, b"env-a").expect("same key"),
            "s3cret"
        );
        assert_eq!(
            ring(NEW, KEY).open(&legacy, b"env-a").expect("older key"),
            "s3cret"
        );
        assert!(matches!(
            ring(NEW, "").open(&legacy, b"env-a"),
            Err(CryptoError::Decrypt)
        ));
        assert!(ring(NEW, KEY).open(&legacy, b"env-b").is_err());
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(CredentialsKey::from_hex("abc").is_err());
        assert!(CredentialsKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(matches!(
            Keyring::from_hex(NEW, Some(&format!("{KEY},abc"))),
            Err(CryptoError::BadOlderKey(2))
        ));
        // The current key listed among the older ones (mid-rotation) is harmless.
        assert!(ring(KEY, KEY).older_ids().is_empty());
    }
}
