//! Percentiles with linear interpolation between order statistics (numpy's default method).

/// Where quantile `q` of `n` (> 0) sorted values lies: the ranks of the two order statistics around it and
/// the weight of the upper one (numpy's linear interpolation).
struct Position {
    lo: usize,
    hi: usize,
    frac: f64,
}

impl Position {
    fn of(n: usize, q: f64) -> Position {
        let h = (n - 1) as f64 * q;
        let lo = h.floor() as usize;
        Position { lo, hi: (lo + 1).min(n - 1), frac: h - lo as f64 }
    }

    /// The quantile, given the value of each order statistic.
    fn interpolate(&self, value: impl Fn(usize) -> f64) -> f64 {
        value(self.lo) + self.frac * (value(self.hi) - value(self.lo))
    }
}

/// The positions of `qs` among `n` (> 0) values, and every rank they need, ascending and distinct.
fn positions(n: usize, qs: &[f64]) -> (Vec<Position>, Vec<usize>) {
    let positions: Vec<Position> = qs.iter().map(|&q| Position::of(n, q)).collect();
    let mut ranks: Vec<usize> = positions.iter().flat_map(|p| [p.lo, p.hi]).collect();
    ranks.sort_unstable();
    ranks.dedup();
    (positions, ranks)
}

/// The `q`-quantile (0..=1) of sorted `values`; None when empty.
pub fn percentile_sorted(values: &[i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(Position::of(values.len(), q).interpolate(|r| values[r] as f64))
}

/// The `qs`-quantiles of `values` (reordered in place), as [`percentile_sorted`] would give them on the
/// sorted values. Each quantile needs at most two order statistics; selecting them (linear time, largest
/// first, each within the part left of the previous one) avoids an n log n sort of millions of values.
pub fn percentiles_select(values: &mut [i64], qs: &[f64]) -> Vec<Option<f64>> {
    if values.is_empty() {
        return vec![None; qs.len()];
    }
    let n = values.len();
    let (positions, ranks) = positions(n, qs);
    let mut bound = n;
    for &r in ranks.iter().rev() {
        if r < bound {
            values[..bound].select_nth_unstable(r);
            bound = r;
        }
    }
    positions.iter().map(|p| Some(p.interpolate(|r| values[r] as f64))).collect()
}

/// The `qs`-quantiles of the values `values()` yields (the same values each call), as
/// [`percentile_sorted`] would give them, without holding the values: each order statistic is narrowed
/// down by histograms of 65,536 buckets over the value range still in question, all of them in one pass
/// over the values per level (at most five passes for any `i64` values). For large columns this replaces
/// a copy as large as the column.
pub fn percentiles_of<I: Iterator<Item = i64>>(values: impl Fn() -> I, qs: &[f64]) -> Vec<Option<f64>> {
    const BUCKETS: usize = 1 << 16;
    let (mut n, mut min, mut max) = (0usize, i64::MAX, i64::MIN);
    for v in values() {
        n += 1;
        min = min.min(v);
        max = max.max(v);
    }
    if n == 0 {
        return vec![None; qs.len()];
    }
    let (positions, ranks) = positions(n, qs);
    /// One order statistic being searched: the value range `lo..=hi` holds it, `below` values lie under it.
    struct Search {
        rank: usize,
        lo: i64,
        hi: i64,
        below: usize,
        value: Option<i64>,
    }
    let mut searches: Vec<Search> =
        ranks.iter().map(|&rank| Search { rank, lo: min, hi: max, below: 0, value: None }).collect();
    loop {
        for s in searches.iter_mut().filter(|s| s.value.is_none() && s.lo == s.hi) {
            s.value = Some(s.lo);
        }
        // Every search refines one level per pass, so the ranges still open are equal or disjoint.
        let mut ranges: Vec<(i64, i64)> = searches.iter().filter(|s| s.value.is_none()).map(|s| (s.lo, s.hi)).collect();
        if ranges.is_empty() {
            break;
        }
        ranges.sort_unstable();
        ranges.dedup();
        let width = |&(lo, hi): &(i64, i64)| (i128::from(hi) - i128::from(lo)) / BUCKETS as i128 + 1;
        let widths: Vec<i128> = ranges.iter().map(width).collect();
        let mut histograms = vec![vec![0usize; BUCKETS]; ranges.len()];
        for v in values() {
            if let Some(k) = ranges.iter().position(|&(lo, hi)| lo <= v && v <= hi) {
                histograms[k][((i128::from(v) - i128::from(ranges[k].0)) / widths[k]) as usize] += 1;
            }
        }
        for s in searches.iter_mut().filter(|s| s.value.is_none()) {
            let k = ranges.binary_search(&(s.lo, s.hi)).expect("the range was listed above");
            let mut seen = s.below;
            for (bucket, &count) in histograms[k].iter().enumerate() {
                if seen + count > s.rank {
                    let lo = i128::from(s.lo) + bucket as i128 * widths[k];
                    let hi = (lo + widths[k] - 1).min(i128::from(s.hi));
                    // Both bounds lie within the previous range, so they fit in i64.
                    (s.lo, s.hi, s.below) = (lo as i64, hi as i64, seen);
                    break;
                }
                seen += count;
            }
        }
    }
    let value = |rank: usize| searches.iter().find(|s| s.rank == rank).and_then(|s| s.value).unwrap_or(0) as f64;
    positions.iter().map(|p| Some(p.interpolate(value))).collect()
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

    #[test]
    fn histogram_search_equals_sorting() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let shapes: [&dyn Fn(u64) -> i64; 4] = [
            &|r| (r % 997) as i64 - 300,                                       // many ties, negatives
            &|r| if r % 100 == 0 { (r >> 1) as i64 } else { (r % 50) as i64 }, // a few huge outliers
            &|r| r as i64,                                                     // the whole i64 range
            &|r| (r % 3_000_000) as i64 * 1_000 + 7,                           // wide spread, one value per bucket
        ];
        for shape in shapes {
            for n in [1usize, 2, 3, 10, 1000, 100_003] {
                let values: Vec<i64> = (0..n).map(|_| shape(next())).collect();
                let mut sorted = values.clone();
                sorted.sort_unstable();
                let qs = [0.5, 0.9, 0.99, 0.0, 1.0, 0.37];
                let got = percentiles_of(|| values.iter().copied(), &qs);
                for (q, g) in qs.iter().zip(got) {
                    assert_eq!(g, percentile_sorted(&sorted, *q), "n={n} q={q}");
                }
            }
        }
        assert_eq!(percentiles_of(std::iter::empty, &[0.5, 0.9]), vec![None, None]);
        assert_eq!(
            percentiles_of(|| [i64::MIN, i64::MAX].into_iter(), &[0.0, 1.0]),
            vec![Some(i64::MIN as f64), Some(i64::MAX as f64)]
        );
    }
}
