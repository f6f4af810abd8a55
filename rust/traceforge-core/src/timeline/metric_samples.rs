//! Compact, exact storage of GPU metric samples (issue 18).
//!
//! A capture holds tens of millions of samples: ~22 metrics per GPU, each sampled at the same instants
//! (one `typeId` group), with small values (percentages, clocks, bandwidth counters). Held naively as
//! `(i64, i64)` per sample that is 16 bytes a sample; here it is about one byte a sample:
//! - [`Timestamps`]: the series of one group share one timestamp list (`Arc`), each seeing a prefix of
//!   it. While the table is read, [`SeriesBuilder`] keeps a series whose timestamps so far equal its
//!   group leader's as a mere length, and gives it its own copy the first time one differs (another
//!   instant, a missing sample, a different order), so it is exact for any input.
//! - [`Values`]: each series' raw values in the narrowest of u8/u16/u32/i64 that holds every value so
//!   far, widened in place when a larger, negative or NULL ([`NULL_I64`]) value arrives.
//!
//! Sorting a series by (timestamp, value) keeps the sharing: one permutation per shared list, then
//! the values of equal timestamps ordered within each series ([`sort_shared`]).
use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

#[cfg(doc)]
use crate::ids::NULL_I64;

/// The narrowest width of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Width {
    U8,
    U16,
    U32,
    I64,
}

impl Width {
    fn of(v: i64) -> Width {
        if (0..=i64::from(u8::MAX)).contains(&v) {
            Width::U8
        } else if (0..=i64::from(u16::MAX)).contains(&v) {
            Width::U16
        } else if (0..=i64::from(u32::MAX)).contains(&v) {
            Width::U32
        } else {
            Width::I64
        }
    }
}

/// The raw integer values of one series (NULL as [`NULL_I64`]) in the narrowest width that holds them
/// all. Unsigned widths hold only values >= 0, so every width orders its values as i64 does.
#[derive(Debug, Clone)]
pub enum Values {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

impl Default for Values {
    fn default() -> Self {
        Values::U8(Vec::new())
    }
}

impl PartialEq for Values {
    /// Equal values, whatever their widths.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// Apply `$e` to the vector inside a [`Values`], whatever its width.
macro_rules! each_width {
    ($values:expr, $v:ident => $e:expr) => {
        match $values {
            Values::U8($v) => $e,
            Values::U16($v) => $e,
            Values::U32($v) => $e,
            Values::I64($v) => $e,
        }
    };
}

impl Values {
    pub fn len(&self) -> usize {
        each_width!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn capacity(&self) -> usize {
        each_width!(self, v => v.capacity())
    }

    fn width(&self) -> Width {
        match self {
            Values::U8(_) => Width::U8,
            Values::U16(_) => Width::U16,
            Values::U32(_) => Width::U32,
            Values::I64(_) => Width::I64,
        }
    }

    /// Bytes of one value (tests, accounting).
    pub fn value_bytes(&self) -> usize {
        match self.width() {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
            Width::I64 => 8,
        }
    }

    /// Append `value`, widening first if the current width cannot hold it.
    pub fn push(&mut self, value: i64) {
        // The casts are exact: each arm is taken only when the value is in the width's range.
        match self {
            Values::U8(v) if Width::of(value) <= Width::U8 => v.push(value as u8),
            Values::U16(v) if Width::of(value) <= Width::U16 => v.push(value as u16),
            Values::U32(v) if Width::of(value) <= Width::U32 => v.push(value as u32),
            Values::I64(v) => v.push(value),
            _ => {
                self.widen(Width::of(value));
                self.push(value);
            }
        }
    }

    /// Re-store in width `to` (wider than now), keeping the capacity: one copy of this series only.
    fn widen(&mut self, to: Width) {
        debug_assert!(to > self.width());
        let cap = self.capacity().max(self.len() + 1);
        let old = std::mem::take(self);
        fn copy<T>(old: &Values, cap: usize, f: impl Fn(i64) -> T) -> Vec<T> {
            let mut out = Vec::with_capacity(cap);
            out.extend(old.iter().map(f));
            out
        }
        // Every old value fits `to`, which is wider than the old width.
        *self = match to {
            Width::U8 => unreachable!("nothing is narrower than u8"),
            Width::U16 => Values::U16(copy(&old, cap, |v| v as u16)),
            Width::U32 => Values::U32(copy(&old, cap, |v| v as u32)),
            Width::I64 => Values::I64(copy(&old, cap, |v| v)),
        };
    }

    /// Room for `additional` more values at the current width.
    pub fn reserve_exact(&mut self, additional: usize) {
        each_width!(self, v => v.reserve_exact(additional))
    }

    pub fn shrink_to_fit(&mut self) {
        each_width!(self, v => v.shrink_to_fit())
    }

    /// Value `i` as i64.
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Values::U8(v) => i64::from(v[i]),
            Values::U16(v) => i64::from(v[i]),
            Values::U32(v) => i64::from(v[i]),
            Values::I64(v) => v[i],
        }
    }

    pub fn iter(&self) -> ValuesIter<'_> {
        self.slice(0..self.len())
    }

    /// The values at `rows`, as i64.
    pub fn slice(&self, rows: Range<usize>) -> ValuesIter<'_> {
        match self {
            Values::U8(v) => ValuesIter::U8(v[rows].iter()),
            Values::U16(v) => ValuesIter::U16(v[rows].iter()),
            Values::U32(v) => ValuesIter::U32(v[rows].iter()),
            Values::I64(v) => ValuesIter::I64(v[rows].iter()),
        }
    }

    /// The values in the order `perm` (a permutation of `0..len`), same width.
    fn permuted(&self, perm: &[usize]) -> Values {
        match self {
            Values::U8(v) => Values::U8(perm.iter().map(|&i| v[i]).collect()),
            Values::U16(v) => Values::U16(perm.iter().map(|&i| v[i]).collect()),
            Values::U32(v) => Values::U32(perm.iter().map(|&i| v[i]).collect()),
            Values::I64(v) => Values::I64(perm.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Sort the values at `rows` ascending (as i64: every width orders alike).
    fn sort_rows(&mut self, rows: Range<usize>) {
        each_width!(self, v => v[rows].sort_unstable())
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = i64;
    type IntoIter = ValuesIter<'a>;
    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// The values of a [`Values`] slice as i64.
#[derive(Debug, Clone)]
pub enum ValuesIter<'a> {
    U8(std::slice::Iter<'a, u8>),
    U16(std::slice::Iter<'a, u16>),
    U32(std::slice::Iter<'a, u32>),
    I64(std::slice::Iter<'a, i64>),
}

impl Iterator for ValuesIter<'_> {
    type Item = i64;

    fn next(&mut self) -> Option<i64> {
        match self {
            ValuesIter::U8(it) => it.next().map(|&v| i64::from(v)),
            ValuesIter::U16(it) => it.next().map(|&v| i64::from(v)),
            ValuesIter::U32(it) => it.next().map(|&v| i64::from(v)),
            ValuesIter::I64(it) => it.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            ValuesIter::U8(it) => it.len(),
            ValuesIter::U16(it) => it.len(),
            ValuesIter::U32(it) => it.len(),
            ValuesIter::I64(it) => it.len(),
        };
        (n, Some(n))
    }

    /// One loop per width (what `sum`, `extend`, `for_each` use), not a width test per value.
    fn fold<B, F: FnMut(B, i64) -> B>(self, init: B, mut f: F) -> B {
        match self {
            ValuesIter::U8(it) => it.fold(init, |acc, &v| f(acc, i64::from(v))),
            ValuesIter::U16(it) => it.fold(init, |acc, &v| f(acc, i64::from(v))),
            ValuesIter::U32(it) => it.fold(init, |acc, &v| f(acc, i64::from(v))),
            ValuesIter::I64(it) => it.fold(init, |acc, &v| f(acc, v)),
        }
    }
}

impl ExactSizeIterator for ValuesIter<'_> {}

/// The timestamps of one series: a prefix of a list that other series of its group may share.
#[derive(Debug, Clone, Default)]
pub struct Timestamps {
    list: Arc<Vec<i64>>,
    len: usize,
}

impl Timestamps {
    /// Whether `self` and `other` are one shared list (same list, same length).
    pub fn shares(&self, other: &Timestamps) -> bool {
        Arc::ptr_eq(&self.list, &other.list) && self.len == other.len
    }
}

impl From<Vec<i64>> for Timestamps {
    fn from(v: Vec<i64>) -> Self {
        let len = v.len();
        Timestamps { list: Arc::new(v), len }
    }
}

impl Deref for Timestamps {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        &self.list[..self.len]
    }
}

impl PartialEq for Timestamps {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// Timestamps of a series being read.
#[derive(Debug)]
enum Stamps {
    Own(Vec<i64>),
    /// The first `len` timestamps of series `leader` (always `Own`), which are this series' so far.
    Follow {
        leader: usize,
        len: usize,
    },
}

#[derive(Debug)]
struct Building {
    device: i64,
    metric: u32,
    ts: Stamps,
    value: Values,
}

/// Files samples into series in arrival order, sharing timestamps within a group (see the module doc).
#[derive(Debug, Default)]
pub struct SeriesBuilder {
    series: Vec<Building>,
    /// Group -> its leader: the first series made in it, whose timestamps the others follow.
    leaders: HashMap<i64, usize>,
}

impl SeriesBuilder {
    /// A new, empty series of (`device`, `metric`) in sharing group `group` (series likely sampled at the
    /// same instants: one `typeId`, one device); returns its id.
    pub fn add(&mut self, device: i64, metric: u32, group: i64) -> usize {
        let id = self.series.len();
        let ts = match self.leaders.get(&group) {
            Some(&leader) => Stamps::Follow { leader, len: 0 },
            None => {
                self.leaders.insert(group, id);
                Stamps::Own(Vec::new())
            }
        };
        self.series.push(Building { device, metric, ts, value: Values::default() });
        id
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Samples in series `id` so far.
    pub fn len_of(&self, id: usize) -> usize {
        self.series[id].value.len()
    }

    /// Room for series `id` to reach `total` samples without reallocating (what it owns only).
    pub fn reserve_total(&mut self, id: usize, total: usize) {
        let s = &mut self.series[id];
        let more = total.saturating_sub(s.value.len());
        s.value.reserve_exact(more);
        if let Stamps::Own(ts) = &mut s.ts {
            ts.reserve_exact(more);
        }
    }

    /// Append sample (`ts`, `value`) to series `id`.
    pub fn push(&mut self, id: usize, ts: i64, value: i64) {
        if let Stamps::Follow { leader, len } = self.series[id].ts {
            let Stamps::Own(lead) = &self.series[leader].ts else { unreachable!("a leader owns its timestamps") };
            if lead.get(len) == Some(&ts) {
                self.series[id].ts = Stamps::Follow { leader, len: len + 1 };
            } else {
                // Diverged: from now on its own copy (sized like the leader's, likely its final size).
                let mut own = Vec::with_capacity(lead.capacity().max(len + 1));
                own.extend_from_slice(&lead[..len]);
                own.push(ts);
                self.series[id].ts = Stamps::Own(own);
            }
        } else if let Stamps::Own(own) = &mut self.series[id].ts {
            own.push(ts);
        }
        self.series[id].value.push(value);
    }

    /// The series, in the order made: `(device, metric, timestamps, values)`, capacity trimmed.
    pub fn finish(self) -> Vec<(i64, u32, Timestamps, Values)> {
        let mut owned: Vec<Option<Arc<Vec<i64>>>> = Vec::with_capacity(self.series.len());
        let mut rest = Vec::with_capacity(self.series.len());
        for mut s in self.series {
            s.value.shrink_to_fit();
            match s.ts {
                Stamps::Own(mut ts) => {
                    ts.shrink_to_fit();
                    let len = ts.len();
                    let list = Arc::new(ts);
                    owned.push(Some(Arc::clone(&list)));
                    rest.push((s.device, s.metric, Timestamps { list, len }, s.value, None));
                }
                Stamps::Follow { leader, len } => {
                    owned.push(None);
                    rest.push((s.device, s.metric, Timestamps::default(), s.value, Some((leader, len))));
                }
            }
        }
        rest.into_iter()
            .map(|(device, metric, ts, value, follow)| {
                let ts = match follow {
                    Some((leader, len)) => {
                        Timestamps { list: Arc::clone(owned[leader].as_ref().expect("a leader owns")), len }
                    }
                    None => ts,
                };
                (device, metric, ts, value)
            })
            .collect()
    }
}

/// Sort each series' samples by (timestamp, value), given each series' `(timestamps, values)`; series
/// sharing one timestamp list still share it after. A shared list is checked (and, if unsorted,
/// permuted) once; only the values of equal timestamps are then ordered per series.
pub fn sort_shared(series: &mut [(&mut Timestamps, &mut Values)]) {
    // Series sharing one list, by (list, length), in first-seen order.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<(*const Vec<i64>, usize), usize> = HashMap::new();
    for (i, (ts, _)) in series.iter().enumerate() {
        let g = *group_of.entry((Arc::as_ptr(&ts.list), ts.len)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    for members in groups {
        let lead = series[members[0]].0.clone(); // one more reference to the list, not a copy
        let ts: &[i64] = &lead;
        if !ts.is_sorted() {
            let mut perm: Vec<usize> = (0..ts.len()).collect();
            perm.sort_unstable_by_key(|&i| ts[i]);
            let sorted = Timestamps::from(perm.iter().map(|&i| ts[i]).collect::<Vec<i64>>());
            for &m in &members {
                let (ts, values) = &mut series[m];
                **values = values.permuted(&perm);
                **ts = sorted.clone();
            }
        }
        let lead = series[members[0]].0.clone();
        let ts: &[i64] = &lead;
        if ts.windows(2).any(|w| w[0] == w[1]) {
            let runs = equal_runs(ts);
            for &m in &members {
                for r in &runs {
                    series[m].1.sort_rows(r.clone());
                }
            }
        }
    }
}

/// The runs of two or more equal timestamps of sorted `ts`.
fn equal_runs(ts: &[i64]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=ts.len() {
        if i == ts.len() || ts[i] != ts[start] {
            if i - start > 1 {
                runs.push(start..i);
            }
            start = i;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NULL_I64;

    /// Reference: each series' samples as plain pairs sorted by (ts, value).
    fn plain(samples: &[(usize, i64, i64)], n: usize) -> Vec<Vec<(i64, i64)>> {
        let mut out = vec![Vec::new(); n];
        for &(s, t, v) in samples {
            out[s].push((t, v));
        }
        out.iter_mut().for_each(|s| s.sort_unstable());
        out
    }

    /// Build series 0..n, all in group 0, from (series, ts, value) in order; sort; return them.
    fn build(samples: &[(usize, i64, i64)], n: usize) -> Vec<(Timestamps, Values)> {
        let mut b = SeriesBuilder::default();
        for s in 0..n {
            assert_eq!(b.add(0, s as u32, 0), s);
        }
        for &(s, t, v) in samples {
            b.push(s, t, v);
        }
        let mut out: Vec<(Timestamps, Values)> = b.finish().into_iter().map(|(_, _, t, v)| (t, v)).collect();
        let mut refs: Vec<(&mut Timestamps, &mut Values)> = out.iter_mut().map(|(t, v)| (t, v)).collect();
        sort_shared(&mut refs);
        out
    }

    fn check(samples: &[(usize, i64, i64)], n: usize) -> Vec<(Timestamps, Values)> {
        let got = build(samples, n);
        let want = plain(samples, n);
        for (s, (ts, v)) in got.iter().enumerate() {
            let pairs: Vec<(i64, i64)> = ts.iter().copied().zip(v.iter()).collect();
            assert_eq!(ts.len(), v.len());
            assert_eq!(pairs, want[s], "series {s}");
        }
        got
    }

    #[test]
    fn values_widen_in_place_exactly() {
        let mut v = Values::default();
        let input = [0, 255, 7, 256, 65535, 1, 65536, u32::MAX as i64, 3];
        for (i, &x) in input.iter().enumerate() {
            v.push(x);
            let want = match i {
                0..=2 => 1,
                3..=5 => 2,
                _ => 4,
            };
            assert_eq!(v.value_bytes(), want, "after {x}");
        }
        v.push(-1);
        assert_eq!(v.value_bytes(), 8);
        v.push(NULL_I64);
        v.push(i64::MAX);
        let mut want = input.to_vec();
        want.extend([-1, NULL_I64, i64::MAX]);
        assert_eq!(v.iter().collect::<Vec<_>>(), want);
        assert_eq!(v.get(3), 256);
        assert_eq!(v.slice(2..5).collect::<Vec<_>>(), vec![7, 256, 65535]);
        // u8 straight to i64 by a NULL.
        let mut v = Values::default();
        v.push(5);
        v.push(NULL_I64);
        assert_eq!((v.value_bytes(), v.iter().collect::<Vec<_>>()), (8, vec![5, NULL_I64]));
        assert_eq!(Values::U8(vec![1, 2]), Values::I64(vec![1, 2]));
    }

    #[test]
    fn a_group_sampled_together_shares_one_list() {
        // Three metrics at 1000 instants, row order instant by instant, metric by metric.
        let mut s = Vec::new();
        for t in 0..1000 {
            for m in 0..3 {
                s.push((m, t * 100 - 5000, (t * (m as i64 + 1)) % (200 + 100 * m as i64)));
            }
        }
        let got = check(&s, 3);
        assert!(got[0].0.shares(&got[1].0) && got[0].0.shares(&got[2].0));
        assert_eq!((got[0].1.value_bytes(), got[2].1.value_bytes()), (1, 2));
    }

    #[test]
    fn a_series_that_diverges_mid_way_gets_its_own_copy() {
        let mut s = Vec::new();
        for t in 0..50 {
            s.push((0, t, 1));
            // series 1 misses instant 20 and has an extra one at 30; series 2 misses the last instants.
            if t != 20 {
                s.push((1, t, 2));
            }
            if t == 30 {
                s.push((1, 30, 0));
            }
            if t < 40 {
                s.push((2, t, NULL_I64));
            }
        }
        let got = check(&s, 3);
        assert!(!got[0].0.shares(&got[1].0));
        assert_eq!(got[2].0.len(), 40);
        assert!(Arc::ptr_eq(&got[0].0.list, &got[2].0.list), "a prefix still shares");
        assert_eq!(got[1].0.len(), 50);
    }

    #[test]
    fn follower_first_in_an_instant_diverges_exactly() {
        // At instant 2 series 1's row comes before the leader's.
        let s = [(0, 1, 1), (1, 1, 1), (1, 2, 5), (0, 2, 6), (0, 3, 7), (1, 3, 8)];
        check(&s, 2);
    }

    #[test]
    fn unsorted_input_with_duplicates_and_negatives_sorts_by_ts_then_value() {
        // Instants in descending order, each instant twice with values in descending order.
        let mut s = Vec::new();
        for t in (-20..20).rev() {
            for rep in (0..2).rev() {
                for m in 0..3 {
                    let v = if m == 2 && t == 3 { NULL_I64 } else { rep * 1000 + (t + 20) * m as i64 };
                    s.push((m, t * 7, v));
                }
            }
        }
        let got = check(&s, 3);
        assert!(got[0].0.shares(&got[1].0) && got[1].0.shares(&got[2].0), "permuted once, still shared");
    }

    #[test]
    fn groups_are_independent_and_empty_series_are_fine() {
        let mut b = SeriesBuilder::default();
        let a = b.add(0, 0, 10);
        let c = b.add(1, 0, 11);
        let d = b.add(1, 1, 11);
        let e = b.add(0, 1, 10);
        for t in 0..5 {
            b.push(a, t, t);
            b.push(c, t * 2, t);
            b.push(d, t * 2, 300);
        }
        let got = b.finish();
        assert!(got[c].2.shares(&got[d].2) && !got[a].2.shares(&got[c].2));
        assert_eq!(&*got[d].2, &[0, 2, 4, 6, 8]);
        assert!(got[e].2.is_empty() && got[e].3.is_empty());
        assert_eq!(got[d].3.value_bytes(), 2);
    }
}
