//! The simulator's prefix cache: prompts are cut into blocks of [`BLOCK_CHARS`] characters (16
//! tokens at the simulator's 4 characters a token), each block keyed by the hash of the whole
//! prompt up to its end, as vLLM's automatic prefix caching keys its KV blocks. A prompt that
//! starts with blocks already seen reuses them: a shared system prompt, or a conversation's
//! earlier turns, cost no prefill.

use std::collections::{HashSet, VecDeque};

/// Characters per cached block.
pub const BLOCK_CHARS: usize = 64;
/// Tokens per cached block.
pub const BLOCK_TOKENS: u64 = (BLOCK_CHARS / 4) as u64;

/// Blocks remembered, oldest evicted first.
#[derive(Debug, Default)]
pub struct PrefixCache {
    blocks: HashSet<u64>,
    order: VecDeque<u64>,
}

/// The running hash of each whole block's prefix (FNV-1a over the characters so far).
fn block_keys(text: &str) -> Vec<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut keys = Vec::with_capacity(text.len() / BLOCK_CHARS);
    for (i, c) in text.chars().enumerate() {
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        if (i + 1) % BLOCK_CHARS == 0 {
            keys.push(h);
        }
    }
    keys
}

impl PrefixCache {
    /// Tokens of `text`'s prefix found cached (whole blocks), then remembers its blocks, at most
    /// `capacity` blocks in all.
    pub fn lookup_insert(&mut self, text: &str, capacity: usize) -> u64 {
        let keys = block_keys(text);
        let hit = keys.iter().take_while(|k| self.blocks.contains(k)).count();
        for k in keys {
            if self.blocks.insert(k) {
                self.order.push_back(k);
            }
        }
        while self.order.len() > capacity {
            if let Some(old) = self.order.pop_front() {
                self.blocks.remove(&old);
            }
        }
        hit as u64 * BLOCK_TOKENS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_prefix_is_found_by_whole_blocks() {
        let mut c = PrefixCache::default();
        let system = "s".repeat(200);
        assert_eq!(c.lookup_insert(&format!("{system} first question"), 100), 0);
        // 200 shared characters: three whole blocks of 64.
        assert_eq!(
            c.lookup_insert(&format!("{system} other question"), 100),
            3 * BLOCK_TOKENS
        );
        assert_eq!(c.lookup_insert("unrelated", 100), 0);
        let mut small = PrefixCache::default();
        small.lookup_insert(&"a".repeat(640), 2);
        assert_eq!(small.lookup_insert(&"a".repeat(640), 2), 0, "evicted");
    }
}
