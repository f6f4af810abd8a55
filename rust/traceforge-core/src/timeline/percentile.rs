//! Percentiles with linear interpolation between order statistics (numpy's default method).

/// The `q`-quantile (0..=1) of sorted `values`; None when empty.
pub fn percentile_sorted(values: &[i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let h = (values.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = h - lo as f64;
    Some(values[lo] as f64 + frac * (values[hi] as f64 - values[lo] as f64))
}

/// The `qs`-quantiles of `values` (reordered in place), as [`percentile_sorted`] would give them on the
/// sorted values. Each quantile needs at most two order statistics; selecting them (linear time, largest
/// first, each within the part left of the previous one) avoids an n log n sort of millions of values.
pub fn percentiles_select(values: &mut [i64], qs: &[f64]) -> Vec<Option<f64>> {
    if values.is_empty() {
        return vec![None; qs.len()];
    }
    let n = values.len();
    let positions: Vec<(usize, usize, f64)> = qs
        .iter()
        .map(|&q| {
            let h = (n - 1) as f64 * q;
            let lo = h.floor() as usize;
            (lo, (lo + 1).min(n - 1), h - lo as f64)
        })
        .collect();
    let mut ranks: Vec<usize> = positions.iter().flat_map(|&(lo, hi, _)| [lo, hi]).collect();
    ranks.sort_unstable_by(|a, b| b.cmp(a));
    ranks.dedup();
    let mut bound = n;
    for &r in &ranks {
        if r < bound {
            values[..bound].select_nth_unstable(r);
            bound = r;
        }
    }
    positions
        .iter()
        .map(|&(lo, hi, frac)| Some(values[lo] as f64 + frac * (values[hi] as f64 - values[lo] as f64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.97]
        let v = [1, 2, 3, 4];
        assert_eq!(percentile_sorted(&v, 0.5), Some(2.5));
        assert!((percentile_sorted(&v, 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert!((percentile_sorted(&v, 0.99).unwrap() - 3.97).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[7], 0.99), Some(7.0));
        assert_eq!(percentile_sorted(&[], 0.5), None);
    }

    #[test]
    fn selection_equals_sorting() {
        // A deterministic pseudo-random multiset with many ties, several sizes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in [1usize, 2, 3, 7, 100, 1001, 65_537] {
            let values: Vec<i64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 997) as i64 - 300
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let qs = [0.5, 0.9, 0.99, 0.0, 1.0, 0.25];
            let mut work = values.clone();
            let got = percentiles_select(&mut work, &qs);
            for (q, g) in qs.iter().zip(got) {
                assert_eq!(g, percentile_sorted(&sorted, *q), "n={n} q={q}");
            }
            work.sort_unstable();
            assert_eq!(work, sorted, "selection must only reorder");
        }
        assert_eq!(percentiles_select(&mut [], &[0.5]), vec![None]);
    }
}
