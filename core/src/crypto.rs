//! Encryption of generated environment credentials at rest: AES-256-GCM with a key from
//! configuration, a random 96-bit nonce per secret, and the environment id as associated data
//! (so a ciphertext cannot be moved to another environment's row).

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "BULKHEAD_CREDENTIALS_KEY must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`"
    )]
    BadKey,
    #[error(
        "a stored credential could not be decrypted: wrong BULKHEAD_CREDENTIALS_KEY, or the row was altered"
    )]
    Decrypt,
}

/// The 256-bit key that seals credentials.
#[derive(Clone)]
pub struct CredentialsKey([u8; 32]);

impl std::fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsKey(<redacted>)")
    }
}

/// A sealed secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl CredentialsKey {
    pub fn from_hex(raw: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(raw.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Result<Aes256Gcm, CryptoError> {
        Aes256Gcm::new_from_slice(&self.0).map_err(|_| CryptoError::BadKey)
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
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, sealed: &Sealed, associated: &[u8]) -> Result<String, CryptoError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trips_and_binds_to_the_environment() {
        let key = CredentialsKey::from_hex(KEY).expect("key");
        let sealed = key.seal("s3cret", b"env-a").expect("seal");
        assert_ne!(sealed.ciphertext, b"s3cret");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(key.open(&sealed, b"env-a").expect("open"), "s3cret");
        assert!(key.open(&sealed, b"env-b").is_err());
        let other = CredentialsKey::from_hex(&KEY.replace("1f", "ff")).expect("key");
        assert!(other.open(&sealed, b"env-a").is_err());
        assert_ne!(
            key.seal("s3cret", b"env-a").expect("seal").nonce,
            sealed.nonce
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(CredentialsKey::from_hex("abc").is_err());
        assert!(CredentialsKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
