//! Grouping operation indices by a key (device, stream, kernel name) without sorting them.

/// Indices of `0..n` grouped by `key`, groups in ascending key order, indices ascending in each group.
///
/// Keys are few (devices, streams, kernel names) and rows many, so this buckets in two linear passes
/// (count, then place) instead of sorting an index. Up to `low_memory_above` rows the first pass keeps
/// each row's group (4 bytes a row) so that the second looks no key up; above it, no per-row memory is
/// used beyond the groups themselves.
pub(crate) fn group_by<K: Ord + Copy + std::hash::Hash>(
    n: usize,
    key: impl Fn(usize) -> K,
    low_memory_above: usize,
) -> Vec<(K, Vec<u32>)> {
    let mut slots: ahash::AHashMap<K, usize> = ahash::AHashMap::new();
    let mut groups: Vec<(K, Vec<u32>)> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    // Consecutive rows usually share a key (one device, long runs on a stream): skip the hash lookup then.
    let mut last: Option<(K, usize)> = None;
    let mut slot_of = |k: K, slots: &mut ahash::AHashMap<K, usize>, counts: &mut Vec<usize>| -> usize {
        match last {
            Some((lk, s)) if lk == k => s,
            _ => {
                let s = *slots.entry(k).or_insert_with(|| {
                    counts.push(0);
                    counts.len() - 1
                });
                last = Some((k, s));
                s
            }
        }
    };
    let remember = n <= low_memory_above;
    let mut row_slots: Vec<u32> = Vec::with_capacity(if remember { n } else { 0 });
    for i in 0..n {
        let s = slot_of(key(i), &mut slots, &mut counts);
        counts[s] += 1;
        if remember {
            row_slots.push(s as u32);
        }
    }
    let mut keys: Vec<(K, usize)> = slots.iter().map(|(&k, &s)| (k, s)).collect();
    keys.sort_unstable_by_key(|x| x.1);
    groups.extend(keys.iter().map(|&(k, s)| (k, Vec::with_capacity(counts[s]))));
    if remember {
        for (i, &s) in row_slots.iter().enumerate() {
            groups[s as usize].1.push(i as u32);
        }
    } else {
        for i in 0..n {
            let s = slot_of(key(i), &mut slots, &mut counts);
            groups[s].1.push(i as u32);
        }
    }
    groups.sort_unstable_by_key(|g| g.0);
    groups
}
