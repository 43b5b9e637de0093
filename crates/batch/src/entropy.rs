//! The crate's single source of randomness (key bytes, key ids, nonces).
//!
//! Invariant: randomness comes only from the operating system RNG, and a
//! failing RNG is reported as an error instead of panicking or falling back
//! to anything weaker.

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;

/// Fills `buf` from the OS RNG; the error text describes the RNG failure.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), String> {
    OsRng.try_fill_bytes(buf).map_err(|e| e.to_string())
}

/// `bytes` random bytes from the OS RNG as lower-case hex (session secrets and such).
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_distinct_values() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a).unwrap();
        fill(&mut b).unwrap();
        assert_ne!(a, [0u8; 32]);
        assert_ne!(a, b);
    }
}
