//! Bearer secrets: access tokens, API keys (`bk_` + random + checksum) and invitation tokens,
//! generated from the OS RNG and stored only as SHA-256.

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

pub const ACCESS_TOKEN_PREFIX: &str = "bkt_";
pub const API_KEY_PREFIX: &str = "bk_";
pub const INVITATION_PREFIX: &str = "bki_";
/// Random part of an API key: 24 bytes = 192 bits.
const API_KEY_RANDOM_BYTES: usize = 24;
const API_KEY_CHECKSUM_BYTES: usize = 4;

pub type SecretHash = [u8; 32];

pub fn sha256(data: &[u8]) -> SecretHash {
    Sha256::digest(data).into()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS RNG failing means the machine cannot make secrets at all; nothing sensible remains.
    OsRng
        .try_fill_bytes(&mut bytes)
        .unwrap_or_else(|e| panic!("operating-system random number generator failed: {e}"));
    bytes
}

/// A freshly generated bearer secret and the hash that is stored in its place.
pub struct GeneratedSecret {
    pub secret: String,
    pub hash: SecretHash,
}

/// An access token: `bkt_` + 256 random bits in hex.
pub fn generate_access_token() -> GeneratedSecret {
    let secret = format!("{ACCESS_TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()));
    let hash = sha256(secret.as_bytes());
    GeneratedSecret { secret, hash }
}

/// An invitation token: `bki_` + 256 random bits in hex.
pub fn generate_invitation_token() -> GeneratedSecret {
    let secret = format!("{INVITATION_PREFIX}{}", hex::encode(random_bytes::<32>()));
    let hash = sha256(secret.as_bytes());
    GeneratedSecret { secret, hash }
}

/// A generated database password: 256 random bits in hex (no characters that need quoting).
pub fn generate_password() -> String {
    hex::encode(random_bytes::<32>())
}

/// A new API key: the full secret (shown once), its display prefix and its stored hash.
pub struct GeneratedApiKey {
    pub secret: String,
    /// `bk_` and the first 8 hex characters: enough to recognise a key in a list or a log.
    pub prefix: String,
    pub hash: SecretHash,
}

fn api_key_checksum(random_hex: &str) -> String {
    hex::encode(&sha256(random_hex.as_bytes())[..API_KEY_CHECKSUM_BYTES])
}

/// `bk_` + 192 random bits in hex + a 32-bit checksum, so typos and truncated pastes are
/// rejected without a database lookup and secret scanners can recognise real keys.
pub fn generate_api_key() -> GeneratedApiKey {
    let random_hex = hex::encode(random_bytes::<API_KEY_RANDOM_BYTES>());
    let secret = format!(
        "{API_KEY_PREFIX}{random_hex}{}",
        api_key_checksum(&random_hex)
    );
    GeneratedApiKey {
        prefix: format!("{API_KEY_PREFIX}{}", &random_hex[..8]),
        hash: sha256(secret.as_bytes()),
        secret,
    }
}

/// Whether a presented string is shaped like an API key with a valid checksum.
pub fn api_key_is_well_formed(candidate: &str) -> bool {
    let Some(body) = candidate.strip_prefix(API_KEY_PREFIX) else {
        return false;
    };
    let random_len = API_KEY_RANDOM_BYTES * 2;
    if body.len() != random_len + API_KEY_CHECKSUM_BYTES * 2
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return false;
    }
    let (random_hex, checksum) = body.split_at(random_len);
    api_key_checksum(random_hex) == checksum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_carry_prefix_entropy_and_checksum() {
        let key = generate_api_key();
        assert!(key.secret.starts_with("bk_"));
        assert_eq!(key.secret.len(), 3 + 48 + 8);
        assert!(key.secret.starts_with(&key.prefix));
        assert!(api_key_is_well_formed(&key.secret));
        assert_eq!(key.hash, sha256(key.secret.as_bytes()));
        assert_ne!(generate_api_key().secret, key.secret);
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let key = generate_api_key().secret;
        let mut chars: Vec<char> = key.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!api_key_is_well_formed(&typo));
        assert!(!api_key_is_well_formed(&key[..key.len() - 1]));
        assert!(!api_key_is_well_formed("bk_"));
        assert!(!api_key_is_well_formed(&key.replacen("bk_", "xx_", 1)));
    }

    #[test]
    fn access_tokens_are_long_and_distinct() {
        let a = generate_access_token();
        let b = generate_access_token();
        assert_eq!(a.secret.len(), 4 + 64);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, sha256(a.secret.as_bytes()));
    }
}
