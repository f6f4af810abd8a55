//! Neutral column views of GPU operations and NVTX ranges, the input of every timeline metric.
//!
//! Both the export reader (compact columns: ids into per-shape values, narrow correlation ids) and
//! re-analysis from the store (plain columns) describe their operations through these borrowed views,
//! so one metric implementation serves both. A leaf module: it knows neither where the columns came from
//! nor what is computed from them.
use crate::ids::{launch_key, NULL_I64};

/// Columns shared by every GPU operation. `thread` is the launching API call's thread key
/// `(pid << 24) | tid`, `api_start` its start, `launch` the launch key `(pid << 40) | correlationId`;
/// all three are [`NULL_I64`] when no API call matched.
#[derive(Debug, Clone, Copy)]
pub struct OpsView<'a> {
    pub device: Column<'a, i32>,
    pub stream: Column<'a, i32>,
    pub start: &'a [i64],
    pub end: &'a [i64],
    pub thread: Threads<'a>,
    pub api_start: &'a [i64],
    pub launch: LaunchKeys<'a>,
}

/// One value per operation: spelled out, or an id per operation into a few distinct values (how ingest
/// holds what the kernels of one shape share: device, stream, name and process, 4 bytes a kernel for all).
#[derive(Debug, Clone, Copy)]
pub enum Column<'a, T> {
    Plain(&'a [T]),
    Indexed { ids: &'a [u32], values: &'a [T] },
}

impl<T: Copy> Column<'_, T> {
    /// The value of operation `i`.
    #[inline]
    pub fn get(&self, i: usize) -> T {
        match self {
            Column::Plain(values) => values[i],
            Column::Indexed { ids, values } => values[ids[i] as usize],
        }
    }
}

impl<'a, T> From<&'a [T]> for Column<'a, T> {
    fn from(values: &'a [T]) -> Self {
        Column::Plain(values)
    }
}

impl<'a, T> From<&'a Vec<T>> for Column<'a, T> {
    fn from(values: &'a Vec<T>) -> Self {
        Column::Plain(values)
    }
}

/// Correlation ids held in 4 bytes each: [`Correlations::WIDE`] marks an id that is NULL or does not fit,
/// and then `wide` holds it (by operation index, ascending) unless it is NULL.
#[derive(Debug, Clone, Copy)]
pub struct Correlations<'a> {
    pub narrow: &'a [u32],
    pub wide: &'a [(u32, i64)],
}

impl Correlations<'_> {
    /// The narrow id of an operation whose correlation id is NULL or does not fit in 4 bytes.
    pub const WIDE: u32 = u32::MAX;

    /// The correlation id of operation `i` ([`NULL_I64`] when none).
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self.narrow[i] {
            Self::WIDE => match self.wide.binary_search_by_key(&(i as u32), |x| x.0) {
                Ok(pos) => self.wide[pos].1,
                Err(_) => NULL_I64,
            },
            c => i64::from(c),
        }
    }
}

/// The launch key `(pid << 40) | correlationId` of each operation: spelled out, or composed from the
/// operation's process and correlation id (so ingest holds no 8-byte key per kernel).
#[derive(Debug, Clone, Copy)]
pub enum LaunchKeys<'a> {
    Plain(&'a [i64]),
    Composed { pid: Column<'a, i64>, correlation: Correlations<'a> },
}

impl LaunchKeys<'_> {
    /// The launch key of operation `i` ([`NULL_I64`] when it has no process or correlation id).
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            LaunchKeys::Plain(keys) => keys[i],
            LaunchKeys::Composed { pid, correlation } => launch_key(pid.get(i), correlation.get(i)),
        }
    }
}

impl<'a> From<&'a [i64]> for LaunchKeys<'a> {
    fn from(keys: &'a [i64]) -> Self {
        LaunchKeys::Plain(keys)
    }
}

impl<'a> From<&'a Vec<i64>> for LaunchKeys<'a> {
    fn from(keys: &'a Vec<i64>) -> Self {
        LaunchKeys::Plain(keys)
    }
}

/// The launching thread key of each operation: spelled out, or as an index into the few distinct keys
/// (how ingest holds them, 4 bytes an operation).
#[derive(Debug, Clone, Copy)]
pub enum Threads<'a> {
    Keys(&'a [i64]),
    /// `ids[i]` indexes `keys`; [`NO_THREAD`] where no API call matched.
    Indexed {
        ids: &'a [u32],
        keys: &'a [i64],
    },
}

/// A [`Threads::Indexed`] id meaning "no launching thread".
pub const NO_THREAD: u32 = u32::MAX;

impl Threads<'_> {
    /// Thread key of operation `i` ([`NULL_I64`] when none).
    #[inline]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Threads::Keys(keys) => keys[i],
            Threads::Indexed { ids, keys } => match ids[i] {
                NO_THREAD => NULL_I64,
                id => keys[id as usize],
            },
        }
    }
}

impl OpsView<'_> {
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// Kernels: the shared columns plus an interned name (index into the names slice given to [`derive`]) and
/// the end of each kernel's launching API call ([`NULL_I64`] when none matched or it is not known: rows
/// stored before it was kept). With `ops.api_start` it splits launch latency into API time and queue
/// time, as `nsys stats --report kernexecsum` does.
#[derive(Debug, Clone, Copy)]
pub struct KernelsView<'a> {
    pub ops: OpsView<'a>,
    pub name: Column<'a, u32>,
    pub api_end: &'a [i64],
}

/// The API time and queue time of a kernel launch, from the launching call's `[api_start, api_end)` and
/// the kernel's start: what `nsys stats --report kernexecsum` reports. The queue time is
/// `start - api_end` where that is >= 0 (nsys's query keeps zero; a kernel may start before its launch
/// call returns, and then has no queue time), else None. None for both without a matched call (or
/// without its end).
#[inline]
pub fn launch_split(api_start: i64, api_end: i64, start: i64) -> Option<(i64, Option<i64>)> {
    if api_start == NULL_I64 || api_end == NULL_I64 {
        return None;
    }
    let queue = start - api_end;
    Some((api_end - api_start, (queue >= 0).then_some(queue)))
}

/// Memcpy and memset operations.
#[derive(Debug, Clone, Copy)]
pub struct MemopsView<'a> {
    pub ops: OpsView<'a>,
    /// 0 = memcpy, 1 = memset.
    pub op: &'a [u8],
    /// CUPTI copy kind id (memcpy only).
    pub copy_kind: &'a [i64],
    pub bytes: &'a [i64],
}

/// NVTX ranges eligible for projection (push/pop and start/end with an end).
#[derive(Debug, Clone, Copy)]
pub struct RangesView<'a> {
    pub thread: &'a [i64],
    pub start: &'a [i64],
    pub end: &'a [i64],
}
