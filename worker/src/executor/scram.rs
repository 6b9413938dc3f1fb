//! SCRAM-SHA-256 password verifiers (RFC 5802 / 7677, PostgreSQL's `rolpassword` format), so a
//! role's password is sent to the server already hashed: it never appears in clear in the
//! server's logs or `pg_stat_activity`.

use sha2::{Digest, Sha256};

/// PostgreSQL's default iteration count.
pub const ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password`, with a random
/// 16-byte salt. `None` when the password is not printable ASCII (SASLprep would change it; the
/// caller then sends it as a literal and lets the server hash it).
pub fn verifier(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

/// Iterations for a one-time password of 192 random bits: guessing it is out of reach however
/// cheap one guess is, so the key stretching PBKDF2 adds for human passwords buys nothing and
/// costs milliseconds on both ends of every login.
pub const ONE_TIME_ITERATIONS: u32 = 16;

/// A verifier for a random one-time password (see [`ONE_TIME_ITERATIONS`]).
pub fn one_time_verifier(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt);
    verifier_with(password, &salt, ONE_TIME_ITERATIONS)
}

fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> Option<String> {
    if password.is_empty() || !password.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return None;
    }
    let (stored_key, server_key) = keys(password.as_bytes(), salt, iterations);
    Some(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        base64(salt),
        base64(&stored_key),
        base64(&server_key)
    ))
}

/// Whether `verifier` (a `rolpassword` value) was made from `password`.
pub fn matches(verifier: &str, password: &str) -> bool {
    let parse = || -> Option<(u32, Vec<u8>, String)> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        Some((iterations.parse().ok()?, unbase64(salt)?, keys.to_owned()))
    };
    let Some((iterations, salt, keys_text)) = parse() else {
        return false;
    };
    let (stored_key, server_key) = keys(password.as_bytes(), &salt, iterations);
    keys_text == format!("{}:{}", base64(&stored_key), base64(&server_key))
}

fn keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = pbkdf2_sha256(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac_sha256(&salted, b"Server Key");
    (stored_key, server_key)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA-256, one 32-byte block (all SCRAM needs). The HMAC key (the password) is
/// the same in every iteration, so its padded inner and outer blocks are compressed once and
/// each iteration costs two SHA-256 compressions.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u;
    let hmac = Hmac32::new(password);
    for _ in 1..iterations {
        u = hmac.digest(&u);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// HMAC-SHA-256 of 32-byte messages under one key, from precomputed pad states.
struct Hmac32 {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl Hmac32 {
    fn new(key: &[u8]) -> Self {
        let mut block_key = [0u8; 64];
        if key.len() > 64 {
            block_key[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block_key[..key.len()].copy_from_slice(key);
        }
        let state_after = |pad: u8| {
            let mut state = SHA256_IV;
            let block = block_key.map(|b| b ^ pad);
            sha2::compress256(&mut state, &[block.into()]);
            state
        };
        Self {
            inner: state_after(0x36),
            outer: state_after(0x5c),
        }
    }

    /// One block holding a 32-byte message that follows a 64-byte prefix: message, 0x80,
    /// zeros, and the total length in bits (96 bytes = 768 bits).
    fn finish(state: [u32; 8], message: &[u8; 32]) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(message);
        block[32] = 0x80;
        block[56..].copy_from_slice(&768u64.to_be_bytes());
        let mut state = state;
        sha2::compress256(&mut state, &[block.into()]);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn digest(&self, message: &[u8; 32]) -> [u8; 32] {
        let inner = Self::finish(self.inner, message);
        Self::finish(self.outer, &inner)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c)?;
        buffer = (buffer << 6) | u32::try_from(value).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn fast_hmac_matches_the_plain_one() {
        for key in [&b"pencil"[..], &[7u8; 64][..], &[9u8; 100][..]] {
            let message = [42u8; 32];
            assert_eq!(
                Hmac32::new(key).digest(&message),
                hmac_sha256(key, &message)
            );
        }
    }

    #[test]
    fn pbkdf2_matches_a_known_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1 (first 32 bytes).
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // RFC 7914 section 11: P="Password", S="NaCl", c=80000 (first 32 bytes).
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"Password", b"NaCl", 80000)),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        );
    }

    #[test]
    fn verifier_matches_rfc_7677_keys() {
        // RFC 7677: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        let salt = unbase64("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let verifier = verifier_with("pencil", &salt, 4096).expect("ascii");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert!(matches(&verifier, "pencil"));
        assert!(!matches(&verifier, "pencil2"));
        assert!(!matches("md5abc", "pencil"));
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unbase64(&base64(&bytes)).expect("decodes"), bytes);
        }
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert!(verifier("").is_none());
        assert!(verifier("pässword").is_none());
        assert!(verifier("0123abcd").is_some());
    }
}
