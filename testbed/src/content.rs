//! Deterministic test payloads: the same bytes on every backend and in the client.

/// Size of the `/big` file every backend serves.
pub const BIG_LEN: usize = 8 * 1024 * 1024;
/// Seed of `/big`.
pub const BIG_SEED: u64 = 0x726f_746f_725f_6269; // "rotor_bi"
/// Seed of the bodies the load client uploads.
pub const UPLOAD_SEED: u64 = 0x726f_746f_725f_7570; // "rotor_up"

/// `len` pseudo-random bytes from `seed` (xorshift64*): cheap, deterministic, and
/// without long repeats, so a misplaced or duplicated chunk is detected.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The content of `/big`.
pub fn big() -> Vec<u8> {
    pseudo_random(BIG_LEN, BIG_SEED)
}

/// FNV-1a 64-bit digest: enough to compare payloads in reports and messages.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        assert_eq!(pseudo_random(1000, 7), pseudo_random(1000, 7));
        assert_ne!(pseudo_random(1000, 7), pseudo_random(1000, 8));
        assert_eq!(&pseudo_random(1000, 7)[..100], &pseudo_random(100, 7)[..]);
        assert_eq!(big().len(), BIG_LEN);
    }
}
