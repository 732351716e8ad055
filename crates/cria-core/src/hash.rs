//! Seeded hashing, in one place: keys for dropout masks and rollouts (SplitMix64) and content
//! fingerprints that stay the same across toolchains and platforms (FNV-1a), so a resumed run
//! draws the same randomness and recognises its own data.

/// FNV-1a's offset basis: the starting state of a fresh hash.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from state `h` (start with [`FNV_OFFSET`]).
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// FNV-1a of a sequence of token ids (little-endian bytes), continuing from `h`.
pub fn fnv1a_ids(ids: &[u32], h: u64) -> u64 {
    ids.iter().fold(h, |h, x| fnv1a(&x.to_le_bytes(), h))
}

/// SplitMix64's finaliser: turns (seed, counter) pairs into well-spread, independent keys.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of draw `counter` of a run seeded with `seed`: `mix(seed ^ mix(counter))`.
pub fn key(seed: u64, counter: u64) -> u64 {
    mix(seed ^ mix(counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // FNV-1a 64-bit: "" -> the offset basis, "a" -> 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a(b"", FNV_OFFSET), FNV_OFFSET);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a_ids(&[0x61], FNV_OFFSET),
            fnv1a(b"a\0\0\0", FNV_OFFSET)
        );
    }

    #[test]
    fn splitmix_of_zero_is_its_first_output() {
        // SplitMix64 seeded with 0 first returns 0xe220a8397b1dcdaf.
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(key(7, 3), mix(7 ^ mix(3)));
    }
}
