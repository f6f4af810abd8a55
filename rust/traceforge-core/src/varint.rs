//! LEB128 varints and zigzag signs: the byte packing of columns held while a trace is read (the threads'
//! state intervals in `timeline::idle`, the OS runtime calls in `export::os_calls`).

/// Zigzag: small magnitudes of either sign become small unsigned values (0, -1, 1, -2 -> 0, 1, 2, 3).
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Append `v` as a varint (7 bits a byte, high bit set on all but the last).
#[inline]
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Read the varint at `*at`, moving `at` past it.
#[inline]
pub(crate) fn get(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_value_round_trips() {
        let values = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)];
        let mut bytes = Vec::new();
        for &v in &values {
            put(&mut bytes, zigzag(v));
        }
        let mut at = 0;
        let back: Vec<i64> = values.iter().map(|_| unzigzag(get(&bytes, &mut at))).collect();
        assert_eq!(back, values);
        assert_eq!(at, bytes.len());
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)), (0, 1, 2, 3));
    }
}
