//! A fast hasher for the policy engine's own lookup tables (aliases, address ranges, node
//! sets, rule keys), which compilation consults hundreds of thousands of times. The keys come
//! from the policy and the tailnet, not from the network, so speed matters more than
//! resistance to chosen collisions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Hashes one 64-bit word at a time: mix the word in, multiply by an odd constant (2^64
/// divided by the golden ratio), then fold the high bits down, since a product only carries
/// differences upwards.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    fn add(&mut self, word: u64) {
        let h = (self.0 ^ word).wrapping_mul(MULTIPLIER);
        self.0 = h ^ (h >> 29);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    fn hash<T: std::hash::Hash>(value: T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(value)
    }

    #[test]
    fn distinguishes_nearby_keys() {
        assert_ne!(hash("tag:server"), hash("tag:servex"));
        assert_ne!(hash("abcdefgh"), hash("abcdefgh\0"), "a trailing partial word counts");
        assert_ne!(hash(1u128), hash(1u128 << 64));
        let mut seen: FastMap<u64, u32> = FastMap::default();
        for i in 0..10_000u32 {
            seen.insert(hash(format!("100.64.{}.{}", i / 256, i % 256)), i);
        }
        assert_eq!(seen.len(), 10_000, "no collisions among ten thousand addresses");
    }
}
