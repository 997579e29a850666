//! Which shard an object belongs to when the operator runs with `--shards K`: part of the API contract,
//! since it decides which replica serves a VirtualNode (and tools may compute it too).

/// The shard of an object name: FNV-1a (64 bit) of the name's bytes, modulo the shard count (0 when
/// `shards` is 0 or 1). Stable across processes, versions and platforms: changing it would move every
/// node to another replica on upgrade.
pub fn shard_of(name: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_spreads_names() {
        // Published FNV-1a 64 test vectors: the function must never change.
        assert_eq!(
            shard_of("", u32::MAX),
            u32::try_from(0xcbf2_9ce4_8422_2325_u64 % u64::from(u32::MAX)).unwrap()
        );
        assert_eq!(
            shard_of("a", u32::MAX),
            u32::try_from(0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)).unwrap()
        );
        assert_eq!(shard_of("edge-0", 1), 0);
        assert_eq!(shard_of("edge-0", 0), 0);
        let mut counts = [0u32; 4];
        for i in 0..1000 {
            counts[shard_of(&format!("edge-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (200..300).contains(c)), "{counts:?}");
    }
}
