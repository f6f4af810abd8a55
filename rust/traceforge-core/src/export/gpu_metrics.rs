//! GPU metric samples (`GPU_METRICS`, `--gpu-metrics-devices`) and their names
//! (`TARGET_INFO_GPU_METRICS`).
//!
//! A capture holds tens of millions of samples (10 kHz x ~22 metrics per GPU), so the table is read in
//! parallel rowid chunks through a [`RowSink`] that files each row straight into its chunk's per-series
//! columns (no per-row allocation); the chunks are then joined series by series. The device is
//! `typeId & 0xFF`; names join on (typeId, metricId), resolved per trace (nsys does not promise stable
//! metric ids); timestamps are kept as stored, negative ones included.
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::open::ExportFile;
use super::probe::{Capabilities, GPU_METRICS_NAMES_TABLE, GPU_METRICS_TABLE};
use super::scan::{scan_chunk_rows, RowSink, ScanReader};
use crate::error::Result;
use crate::options::IngestOptions;
use crate::timeline::gpu_metrics::{GpuMetrics, MetricSeries};

/// The rows of one rowid chunk, filed by (typeId, metricId).
struct SampleChunk {
    keys: Vec<(i64, i64)>,
    index: HashMap<(i64, i64), usize>,
    /// The last key seen and its slot: rows cycle through a few metrics, so this skips most lookups.
    last: Option<((i64, i64), usize)>,
    ts: Vec<Vec<i64>>,
    value: Vec<Vec<i64>>,
}

/// What one chunk becomes: per (typeId, metricId), its timestamps and values in rowid order.
type ChunkSeries = Vec<((i64, i64), Vec<i64>, Vec<i64>)>;

impl RowSink for SampleChunk {
    type Out = ChunkSeries;

    #[inline]
    fn row(&mut self, c: &[i64]) {
        let key = (c[0], c[1]);
        let slot = match self.last {
            Some((k, slot)) if k == key => slot,
            _ => {
                let next = self.keys.len();
                let slot = *self.index.entry(key).or_insert(next);
                if slot == next {
                    self.keys.push(key);
                    self.ts.push(Vec::new());
                    self.value.push(Vec::new());
                }
                self.last = Some((key, slot));
                slot
            }
        };
        self.ts[slot].push(c[2]);
        self.value[slot].push(c[3]);
    }

    fn finish(self) -> ChunkSeries {
        self.keys.into_iter().zip(self.ts).zip(self.value).map(|((k, t), v)| (k, t, v)).collect()
    }
}

/// `(typeId, metricId) -> metricName` of `TARGET_INFO_GPU_METRICS` (empty without the table).
fn metric_names(
    file: &ExportFile,
    caps: &Capabilities,
    conn: &rusqlite::Connection,
) -> Result<HashMap<(i64, i64), String>> {
    let t = GPU_METRICS_NAMES_TABLE;
    let mut names = HashMap::new();
    if !caps.has_table(t) {
        return Ok(names);
    }
    caps.require_columns(file, t, &["typeId", "metricId", "metricName"])?;
    let mut stmt = conn
        .prepare(&format!("SELECT typeId, metricId, CAST(metricName AS TEXT) FROM {t} ORDER BY rowid"))
        .map_err(|e| file.sqlite_error(e))?;
    let mut rows = stmt.query([]).map_err(|e| file.sqlite_error(e))?;
    while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
        let (type_id, metric_id, name): (Option<i64>, Option<i64>, Option<String>) =
            (row.get(0).ok().flatten(), row.get(1).ok().flatten(), row.get(2).ok().flatten());
        if let (Some(ty), Some(m), Some(name)) = (type_id, metric_id, name) {
            names.entry((ty, m)).or_insert(name);
        }
    }
    Ok(names)
}

/// Read every GPU metric sample (an export without `GPU_METRICS` gives none).
pub fn read_gpu_metrics(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
) -> Result<GpuMetrics> {
    let t = GPU_METRICS_TABLE;
    if !caps.has_table(t) {
        return Ok(GpuMetrics::default());
    }
    caps.require_columns(file, t, &["typeId", "metricId", "timestamp", "value"])?;
    let conn = file.connect()?;
    let names = metric_names(file, caps, &conn)?;
    drop(conn);
    let exprs: Vec<String> = ["typeId", "metricId", "timestamp", "value"].iter().map(|c| format!("\"{c}\"")).collect();
    let (threads, reader) = (options.reader_threads(), ScanReader::chosen(options));
    let chunks = scan_chunk_rows(file, t, &exprs, threads, cancel, reader, |_| SampleChunk {
        keys: Vec::new(),
        index: HashMap::new(),
        last: None,
        ts: Vec::new(),
        value: Vec::new(),
    })?;
    // (typeId, metricId) -> series; series are keyed by (device, name id) so that two types of one device
    // naming the same metric form one series.
    let mut out = GpuMetrics::default();
    let mut name_ids: HashMap<Option<String>, u32> = HashMap::new();
    let mut series_of: HashMap<(i64, u32), usize> = HashMap::new();
    let mut slot_of: HashMap<(i64, i64), usize> = HashMap::new();
    let mut sizes: Vec<usize> = Vec::new();
    for chunk in &chunks {
        for (key, ts, _) in chunk {
            let slot = *slot_of.entry(*key).or_insert_with(|| {
                let name = names.get(key).cloned();
                let metric = *name_ids.entry(name.clone()).or_insert_with(|| {
                    out.names.push(name);
                    (out.names.len() - 1) as u32
                });
                let device = key.0 & 0xFF;
                *series_of.entry((device, metric)).or_insert_with(|| {
                    out.series.push(MetricSeries { device, metric, ..Default::default() });
                    sizes.push(0);
                    out.series.len() - 1
                })
            });
            sizes[slot] += ts.len();
        }
    }
    for (s, &n) in out.series.iter_mut().zip(&sizes) {
        s.ts.reserve_exact(n);
        s.value.reserve_exact(n);
    }
    // Chunk by chunk, each freed once filed: the peak stays near one copy of the samples.
    for (i, chunk) in chunks.into_iter().enumerate() {
        if i % 32 == 31 {
            crate::memory::release_free_memory(); // the chunks filed so far
        }
        for (key, ts, value) in chunk {
            let s = &mut out.series[slot_of[&key]];
            s.ts.extend_from_slice(&ts);
            s.value.extend_from_slice(&value);
        }
    }
    crate::memory::release_free_memory();
    out.normalise();
    Ok(out)
}
