//! Sweep line over kernel intervals: union (busy time), concurrency levels, overlap and idle gaps.
//!
//! Starts and ends are sorted separately and merged, never paired, so the sweep is two sorts and one
//! linear pass. Intervals are half-open: at a timestamp where one kernel ends and another starts, the end
//! is processed first, so the two do not overlap and no zero-length gap appears between them.

use rayon::slice::ParallelSliceMut;

/// Result of one sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sweep {
    /// Length of the union of the intervals.
    pub busy_ns: i64,
    /// Most intervals active at one instant.
    pub max_concurrency: i64,
    /// `level_time[k]` = time with exactly k intervals active (index 0 unused).
    pub level_time: Vec<i64>,
}

impl Sweep {
    /// Time with at least two intervals active.
    pub fn overlap_ns(&self) -> i64 {
        self.level_time.iter().skip(2).sum()
    }
}

/// Sweep the intervals `[starts[i], ends[i])`; both slices are sorted in place. Zero-length intervals
/// must be filtered out by the caller (they are active at no instant). Each idle gap `(start, end)` strictly
/// between busy periods is handed to `on_gap` as it is found, in time order; the sweep stores none.
pub fn sweep(starts: &mut [i64], ends: &mut [i64], on_gap: impl FnMut(i64, i64)) -> Sweep {
    debug_assert_eq!(starts.len(), ends.len());
    // Ingest derives metrics while nothing else runs: the two sorts use every core.
    rayon::join(|| starts.par_sort_unstable(), || ends.par_sort_unstable());
    sweep_sorted(starts.iter().copied(), ends.iter().copied(), on_gap)
}

/// [`sweep`] over starts and ends that are already in ascending order (as many of each), so that
/// callers whose intervals come sorted need not copy them.
pub fn sweep_sorted(
    starts: impl Iterator<Item = i64>,
    ends: impl Iterator<Item = i64>,
    mut on_gap: impl FnMut(i64, i64),
) -> Sweep {
    let mut starts = starts.peekable();
    let mut ends = ends.peekable();
    let mut out = Sweep { level_time: vec![0; 2], ..Default::default() };
    let mut active: i64 = 0;
    let mut prev_t = 0i64;
    let mut busy_start = 0i64;
    let mut last_busy_end: Option<i64> = None;
    while let Some(&end) = ends.peek() {
        // The k-th smallest end is strictly after the k-th smallest start, so `active` never goes negative.
        let (take_end, t) = match starts.peek() {
            Some(&start) if start < end => (false, start),
            _ => (true, end),
        };
        if active > 0 {
            let level = active as usize;
            if level >= out.level_time.len() {
                out.level_time.resize(level + 1, 0);
            }
            out.level_time[level] += t - prev_t;
        }
        prev_t = t;
        if take_end {
            ends.next();
            active -= 1;
            if active == 0 {
                out.busy_ns += t - busy_start;
                last_busy_end = Some(t);
            }
        } else {
            starts.next();
            if active == 0 {
                if let Some(e) = last_busy_end {
                    if t > e {
                        on_gap(e, t);
                    }
                }
                busy_start = t;
            }
            active += 1;
            out.max_concurrency = out.max_concurrency.max(active);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(intervals: &[(i64, i64)]) -> (i64, i64, Vec<i64>) {
        let lo = intervals.iter().map(|x| x.0).min().unwrap_or(0);
        let hi = intervals.iter().map(|x| x.1).max().unwrap_or(0);
        let (mut busy, mut maxc) = (0, 0);
        let mut levels = vec![0i64; intervals.len() + 2];
        for t in lo..hi {
            let c = intervals.iter().filter(|&&(s, e)| s <= t && t < e).count();
            if c > 0 {
                busy += 1;
            }
            levels[c] += 1;
            maxc = maxc.max(c as i64);
        }
        (busy, maxc, levels)
    }

    fn run(intervals: &[(i64, i64)]) -> (Sweep, Vec<(i64, i64)>) {
        let mut s: Vec<i64> = intervals.iter().map(|x| x.0).collect();
        let mut e: Vec<i64> = intervals.iter().map(|x| x.1).collect();
        let mut gaps = Vec::new();
        let sw = sweep(&mut s, &mut e, |a, b| gaps.push((a, b)));
        (sw, gaps)
    }

    #[test]
    fn back_to_back_kernels_do_not_overlap() {
        let (r, gaps) = run(&[(0, 10), (10, 20)]);
        assert_eq!(r.max_concurrency, 1);
        assert_eq!(r.busy_ns, 20);
        assert!(gaps.is_empty());
        assert_eq!(r.overlap_ns(), 0);
    }

    #[test]
    fn nested_and_equal_intervals() {
        let iv = [(0, 100), (10, 20), (10, 20), (50, 60), (200, 210), (205, 230)];
        let (r, gaps) = run(&iv);
        let (busy, maxc, levels) = brute(&iv);
        assert_eq!(r.busy_ns, busy);
        assert_eq!(r.max_concurrency, maxc);
        for (k, t) in r.level_time.iter().enumerate().skip(1) {
            assert_eq!(*t, levels[k], "level {k}");
        }
        assert_eq!(gaps, vec![(100, 200)]);
    }

    #[test]
    fn pseudo_random_against_brute_force() {
        let mut x: u64 = 42;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let iv: Vec<(i64, i64)> = (0..30)
                .map(|_| {
                    let s = (next() % 500) as i64;
                    (s, s + 1 + (next() % 40) as i64)
                })
                .collect();
            let (r, gaps) = run(&iv);
            let (busy, maxc, levels) = brute(&iv);
            assert_eq!(r.busy_ns, busy);
            assert_eq!(r.max_concurrency, maxc);
            let idle_inside: i64 = gaps.iter().map(|(a, b)| b - a).sum();
            assert_eq!(idle_inside, levels[0]);
        }
    }
}
