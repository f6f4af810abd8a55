//! Host-side summaries: the GIL per thread (`thread_gil`) and the OS runtime calls per name
//! (`os_call_summary`, what `nsys stats --report osrtsum` shows).
use std::collections::HashMap;

use super::nvtx::GilIntervals;
use super::percentile::percentiles_select;

/// One `thread_gil` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadGilRow {
    /// Thread key `(pid << 24) | tid`.
    pub thread: i64,
    pub hold_ns: i64,
    pub wait_ns: i64,
    pub wait_count: i64,
    pub wait_p50_ns: Option<f64>,
    pub wait_p99_ns: Option<f64>,
    pub wait_max_ns: Option<i64>,
}

/// Per thread with at least one GIL range: Σ hold and wait durations, the number of waits, their p50 and
/// p99 (linear interpolation) and maximum; ordered by thread key.
pub fn thread_gil(g: &GilIntervals) -> Vec<ThreadGilRow> {
    let mut by_thread: HashMap<i64, (i64, Vec<i64>)> = HashMap::new();
    for i in 0..g.len() {
        let entry = by_thread.entry(g.thread[i]).or_default();
        let d = g.end[i] - g.start[i];
        if g.state[i] == 0 {
            entry.0 += d;
        } else {
            entry.1.push(d);
        }
    }
    let mut rows: Vec<ThreadGilRow> = by_thread
        .into_iter()
        .map(|(thread, (hold_ns, mut waits))| {
            let p = percentiles_select(&mut waits, &[0.50, 0.99]);
            ThreadGilRow {
                thread,
                hold_ns,
                wait_ns: waits.iter().sum(),
                wait_count: waits.len() as i64,
                wait_p50_ns: p[0],
                wait_p99_ns: p[1],
                wait_max_ns: waits.iter().copied().max(),
            }
        })
        .collect();
    rows.sort_unstable_by_key(|r| r.thread);
    rows
}

/// One `os_call_summary` row.
#[derive(Debug, Clone, PartialEq)]
pub struct OsCallSummaryRow {
    /// `StringIds` id of the call's name.
    pub name_id: i64,
    pub count: i64,
    pub total_ns: i64,
    pub avg_ns: f64,
    pub median_ns: f64,
    pub min_ns: i64,
    pub max_ns: i64,
}

/// Per call name: count, total, mean, median (mean of the middle two), minimum and maximum duration.
pub fn os_call_summary(calls: impl IntoIterator<Item = (i64, i64)>) -> Vec<OsCallSummaryRow> {
    // Name ids are `StringIds` ids, dense from 0: a vector indexed by id, hashing only a stray huge one
    // (millions of calls, a few dozen names).
    const DENSE_IDS: i64 = 1 << 20;
    let mut dense: Vec<Vec<i64>> = Vec::new();
    let mut sparse: HashMap<i64, Vec<i64>> = HashMap::new();
    for (name_id, duration) in calls {
        if (0..DENSE_IDS).contains(&name_id) {
            let id = name_id as usize;
            if id >= dense.len() {
                dense.resize_with(id + 1, Vec::new);
            }
            dense[id].push(duration);
        } else {
            sparse.entry(name_id).or_default().push(duration);
        }
    }
    let by_name =
        dense.into_iter().enumerate().filter(|(_, d)| !d.is_empty()).map(|(id, d)| (id as i64, d)).chain(sparse);
    let mut rows: Vec<OsCallSummaryRow> = by_name
        .into_iter()
        .map(|(name_id, mut d)| {
            let total: i64 = d.iter().sum();
            let (min_ns, max_ns) = (d.iter().copied().min().unwrap_or(0), d.iter().copied().max().unwrap_or(0));
            let count = d.len() as i64;
            let median_ns = percentiles_select(&mut d, &[0.5])[0].unwrap_or(0.0);
            OsCallSummaryRow {
                name_id,
                count,
                total_ns: total,
                avg_ns: total as f64 / count as f64,
                median_ns,
                min_ns,
                max_ns,
            }
        })
        .collect();
    rows.sort_unstable_by_key(|r| (std::cmp::Reverse(r.total_ns), r.name_id));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_gil_of_the_edges_export() {
        // Thread A: holds [0, 50), [600, 900); waits 200, 250, 300. Thread B: one hold, no wait.
        let (a, b) = (1i64, 2i64);
        let g = GilIntervals {
            thread: vec![a, a, a, a, a, b],
            state: vec![0, 1, 0, 1, 1, 0],
            start: vec![0, 250, 600, 1100, 2150, 2310],
            end: vec![50, 450, 900, 1350, 2450, 2400],
        };
        let rows = thread_gil(&g);
        assert_eq!(
            rows[0],
            ThreadGilRow {
                thread: a,
                hold_ns: 350,
                wait_ns: 750,
                wait_count: 3,
                wait_p50_ns: Some(250.0),
                wait_p99_ns: Some(299.0),
                wait_max_ns: Some(300)
            }
        );
        assert_eq!(
            (rows[1].hold_ns, rows[1].wait_count, rows[1].wait_p50_ns, rows[1].wait_max_ns),
            (90, 0, None, None)
        );
    }

    #[test]
    fn os_call_summary_per_name() {
        let rows = os_call_summary([(7, 200), (8, 100), (7, 100), (7, 1)]);
        assert_eq!(
            rows[0],
            OsCallSummaryRow {
                name_id: 7,
                count: 3,
                total_ns: 301,
                avg_ns: 301.0 / 3.0,
                median_ns: 100.0,
                min_ns: 1,
                max_ns: 200
            }
        );
        assert_eq!((rows[1].name_id, rows[1].median_ns), (8, 100.0));
    }
}
