//! Class interning: the values that repeat millions of times in a trace (a kernel's shape and launcher,
//! an API call's name, thread and return value) become dense ids, and the store keeps one row per class.
//!
//! The store keeps one row per distinct value and a 4-byte id per event: DuckDB spends most of an ingest
//! on strings, and a kernel row spelled out carries its names on every launch.
use super::launch::{LaunchState, NO_LAUNCHER};
use crate::ids::NULL_I64;

/// What makes two kernels the same class: every `kernels` column that repeats across launches, i.e. the
/// kernel's shape (an index into `Kernels::shapes`), launching thread and launching API name.
pub(crate) type KernelClassKey = (u32, i64, i64);

/// Columns of `kernel_classes`: the shape's columns, then launch_tid and launch_api, each with whether
/// the value is an interned string.
pub(crate) const KERNEL_CLASS_FIELDS: [(&str, bool); 18] = [
    ("device_id", false),
    ("context_id", false),
    ("stream_id", false),
    ("pid", false),
    ("name", true),
    ("short_name", true),
    ("grid_x", false),
    ("grid_y", false),
    ("grid_z", false),
    ("block_x", false),
    ("block_y", false),
    ("block_z", false),
    ("registers_per_thread", false),
    ("static_shared_bytes", false),
    ("dynamic_shared_bytes", false),
    ("graph_node_id", false),
    ("launch_tid", false),
    ("launch_api", true),
];

/// What makes two API calls the same class: (name id, 0 = runtime / 1 = driver, pid, tid, return value).
pub(crate) type ApiClassKey = (i64, u8, i64, i64, i64);

/// Dense ids for values that repeat millions of times, in first-seen order.
pub(crate) struct Interner<K> {
    ids: ahash::AHashMap<K, u32>,
    /// The distinct values; id `i` is `values[i]`.
    pub(crate) values: Vec<K>,
    /// The last key looked up and its id: runs of one key (a thread launching kernel after kernel) are
    /// the common case, and a comparison is cheaper than a hash.
    last: Option<(K, u32)>,
}

impl<K: std::hash::Hash + Eq + Copy> Interner<K> {
    /// No value yet.
    pub(crate) fn new() -> Self {
        Interner { ids: ahash::AHashMap::new(), values: Vec::new(), last: None }
    }

    /// The id of `key`, a new one (the next integer) when it was not seen before.
    #[inline]
    pub(crate) fn id(&mut self, key: K) -> u32 {
        if let Some((last, id)) = self.last {
            if last == key {
                return id;
            }
        }
        let next = self.values.len() as u32;
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.values.push(key);
        }
        self.last = Some((key, id));
        id
    }
}

/// The dictionaries of a trace, complete once the stream that builds each has been read to the end.
#[derive(Default)]
pub(crate) struct Dictionaries {
    /// Complete once `kernel_rows` was streamed.
    pub(crate) kernel_classes: Option<Vec<KernelClassKey>>,
    /// Complete once `api_call_rows` was streamed.
    pub(crate) api_classes: Option<Vec<ApiClassKey>>,
}

/// Kernel class ids, looked up by (shape, launcher) in a dense table where that is small: a trace has few
/// shapes and fewer launchers, so most kernels find their class without hashing its key.
pub(crate) struct KernelClassIds {
    pub(crate) interner: Interner<KernelClassKey>,
    /// Class id + 1 of shape `s` and launcher `l` at `s * (launchers + 1) + l` (the last slot of a shape
    /// for no launcher), 0 while unknown; empty when the table would be large.
    memo: Vec<u32>,
    launchers: usize,
}

impl KernelClassIds {
    /// Entries above which the dense table is not made (16 MiB).
    const MAX_MEMO: usize = 1 << 22;

    /// Ids for the kernels of a trace with `shapes` shapes and `launchers` launchers.
    pub(crate) fn new(shapes: usize, launchers: usize) -> Self {
        let size = shapes.saturating_mul(launchers + 1);
        let memo = if size <= Self::MAX_MEMO { vec![0; size] } else { Vec::new() };
        KernelClassIds { interner: Interner::new(), memo, launchers }
    }

    /// The class id of kernel `op`, of shape `shape`, as launched according to `st`.
    #[inline]
    pub(crate) fn id(&mut self, st: &LaunchState, shape: u32, op: usize) -> u32 {
        let launcher = st.launcher[op];
        let slot = if launcher == NO_LAUNCHER { self.launchers } else { launcher as usize };
        let at = shape as usize * (self.launchers + 1) + slot;
        if let Some(&known) = self.memo.get(at).filter(|&&v| v != 0) {
            return known - 1;
        }
        let (thread, api) = st.launched_by(op);
        let launch_tid = if thread == NULL_I64 { thread } else { thread & 0xFF_FFFF };
        let api = i64::from(api);
        let launch_api = if api < 0 { NULL_I64 } else { api };
        let id = self.interner.id((shape, launch_tid, launch_api));
        if let Some(entry) = self.memo.get_mut(at) {
            *entry = id + 1;
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 100;
    const T1: i64 = (PID << 24) | 101;
    const T2: i64 = (PID << 24) | 102;

    /// Kernel (shape, launcher) pairs and the class id each gets, with and without the dense table.
    fn class_ids(kernels: &[(u32, u32)], launchers: Vec<(i64, i32)>, dense: bool) -> (Vec<u32>, Vec<KernelClassKey>) {
        let st = LaunchState::matched(kernels.iter().map(|k| k.1).collect(), launchers);
        let shapes = kernels.iter().map(|k| k.0 as usize + 1).max().unwrap_or(0);
        // A trace with a huge number of shapes gets no dense table: the same ids come from the interner.
        let mut ids = KernelClassIds::new(if dense { shapes } else { 1 << 40 }, st.launchers.len());
        assert_eq!(ids.memo.is_empty(), !dense);
        let got = kernels.iter().enumerate().map(|(op, k)| ids.id(&st, k.0, op)).collect();
        (got, ids.interner.values)
    }

    #[test]
    fn kernels_of_one_shape_and_launcher_share_a_class_in_first_seen_order() {
        let launchers = vec![(T1, 7), (T2, 7), (T1, 8)];
        let kernels = [
            (0, 0),           // shape 0 launched by thread 101 through API name 7
            (0, 0),           // the same: the same class
            (1, 0),           // another shape
            (0, 1),           // another launching thread
            (0, 2),           // another launching API
            (0, NO_LAUNCHER), // no API call matched
            (0, 0),           // the first class again
        ];
        for dense in [true, false] {
            let (ids, classes) = class_ids(&kernels, launchers.clone(), dense);
            assert_eq!(ids, vec![0, 0, 1, 2, 3, 4, 0], "dense table: {dense}");
            // Classes hold the launching tid (not the thread key) and the API name id; NULL when unmatched.
            assert_eq!(classes, vec![(0, 101, 7), (1, 101, 7), (0, 102, 7), (0, 101, 8), (0, NULL_I64, NULL_I64)]);
        }
    }

    #[test]
    fn the_interner_gives_dense_ids_in_first_seen_order() {
        let mut calls: Interner<ApiClassKey> = Interner::new();
        let keys =
            [(3, 0, PID, 101, 0), (4, 0, PID, 101, 0), (3, 0, PID, 101, 0), (3, 1, PID, 101, 0), (4, 0, PID, 101, 0)];
        let ids: Vec<u32> = keys.iter().map(|&k| calls.id(k)).collect();
        assert_eq!(ids, vec![0, 1, 0, 2, 1]);
        assert_eq!(calls.values, vec![keys[0], keys[1], keys[3]]);
    }
}
