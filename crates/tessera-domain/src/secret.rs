//! Bearer secrets (admin tokens, later SCIM tokens and client secrets): 256-bit random values,
//! shown once, stored only as a SHA-256 digest and compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The kinds of secret Tessera issues. The prefix makes a leaked secret recognisable to secret
/// scanners and to people, and tells which store to look it up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    AdminToken,
    ScimToken,
}

impl SecretKind {
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::AdminToken => "tsr_adm_",
            SecretKind::ScimToken => "tsr_scim_",
        }
    }
}

/// A freshly generated secret: the value to show once and the digest to store.
#[derive(Clone)]
pub struct IssuedSecret {
    pub value: String,
    pub digest: String,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("value", &"[redacted]")
            .field("digest", &self.digest)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomnessError(String);

/// Generates a new 256-bit secret of the given kind.
pub fn issue(kind: SecretKind) -> Result<IssuedSecret, RandomnessError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomnessError(e.to_string()))?;
    let value = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let digest = digest(&value);
    Ok(IssuedSecret { value, digest })
}

/// The stored form of a secret: lower-case hex SHA-256 of its full text.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hashes a person's password with Argon2id (default parameters, random salt) into a PHC
/// string. Passwords are never stored or logged in any other form.
pub fn hash_password(password: &str) -> Result<String, RandomnessError> {
    use argon2::Argon2;
    use argon2::password_hash::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| RandomnessError(e.to_string()))
}

/// Whether a password matches a PHC string from [`hash_password`] (constant time in the hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::Argon2;
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Compares two digests without leaking, through timing, where they first differ.
pub fn digests_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Shortest secret accepted when an operator supplies one (e.g. `TESSERA_BOOTSTRAP_TOKEN`):
/// 32 characters keeps brute force out of reach even for a hand-made value.
pub const MIN_SUPPLIED_SECRET_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn issued_secrets_are_unique_prefixed_and_verify() {
        let a = issue(SecretKind::AdminToken).unwrap();
        let b = issue(SecretKind::AdminToken).unwrap();
        assert_ne!(a.value, b.value);
        assert!(a.value.starts_with("tsr_adm_"));
        assert_eq!(a.value.len(), "tsr_adm_".len() + 43);
        assert!(digests_match(&digest(&a.value), &a.digest));
        assert!(!digests_match(&digest(&b.value), &a.digest));
        assert!(!format!("{a:?}").contains(&a.value));
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!digests_match("ab", "abc"));
    }
}
