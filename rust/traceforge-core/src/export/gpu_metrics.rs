//! GPU metric samples (`GPU_METRICS`, `--gpu-metrics-devices`) and their names
//! (`TARGET_INFO_GPU_METRICS`).
//!
//! A capture holds tens of millions of samples (10 kHz x ~22 metrics per GPU), so the table is read in
//! parallel rowid chunks, and each chunk, in rowid order, is filed row by row into its series (no per-row
//! allocation) and dropped: memory stays one compact copy of the samples
//! ([`crate::timeline::metric_samples`]: the metrics of one `typeId` share their timestamps, values are
//! narrow) plus a few chunks. The device is
//! `typeId & 0xFF`; names join on (typeId, metricId), resolved per trace (nsys does not promise stable
//! metric ids); timestamps are kept as stored, negative ones included.
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::open::ExportFile;
use super::probe::{Capabilities, GPU_METRICS_NAMES_TABLE, GPU_METRICS_TABLE};
use super::scan::{rowid_bounds_with, stream_table_ordered, IntColumns, ScanReader};
use crate::error::Result;
use crate::options::IngestOptions;
use crate::timeline::gpu_metrics::GpuMetrics;
use crate::timeline::metric_samples::SeriesBuilder;

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
    // Workers decode rowid chunks in parallel; this thread files each chunk, in rowid order, into its
    // series and drops it: a few chunks in flight, never the table twice.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let mut filing = Filing::default();
    let mut failed: Option<crate::error::Error> = None;
    let rows = rowid_bounds_with(file, t, reader)?.map_or(0, |(lo, hi)| (hi - lo + 1).max(0) as usize);
    let mut first = true;
    std::thread::scope(|s| {
        s.spawn(|| stream_table_ordered(file, t, &exprs, threads, cancel, reader, |c| c, tx));
        for item in rx {
            match item {
                Ok(cols) => {
                    filing.file(&names, &cols);
                    if first {
                        // Every metric is sampled at the same instants: the first chunk's shares tell
                        // each series' final size, so it grows in place instead of by copies.
                        first = false;
                        let seen = cols[0].len().max(1);
                        let built = &mut filing.built;
                        for id in 0..built.series_count() {
                            built.reserve_total(id, (built.len_of(id) * rows).div_ceil(seen) + 64);
                        }
                    }
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(crate::error::Error::Interrupted);
    }
    Ok(GpuMetrics::from_builder(filing.names, filing.built))
}

/// Where each (typeId, metricId) goes: series are keyed by (device, name id), so that two types of one
/// device naming the same metric form one series; the series of one typeId share timestamps.
#[derive(Default)]
struct Filing {
    built: SeriesBuilder,
    /// Metric names by metric id.
    names: Vec<Option<String>>,
    keys: Vec<(i64, i64)>,
    slots: Vec<usize>,
    index: ahash::AHashMap<(i64, i64), usize>,
    name_ids: HashMap<Option<String>, u32>,
    series_of: HashMap<(i64, u32), usize>,
    /// Position in `keys` of the last row's key: rows cycle through the metrics in a fixed order, so the
    /// next row's key is nearly always the one after it (or the same), and a lookup is rarely needed.
    last: usize,
}

impl Filing {
    /// The series of `key`, made on first sight.
    fn slot(&mut self, names: &HashMap<(i64, i64), String>, key: (i64, i64)) -> usize {
        let n = self.keys.len();
        let guess = if self.last + 1 < n { self.last + 1 } else { 0 };
        let at = if n > 0 && self.keys[guess] == key {
            guess
        } else if n > 0 && self.keys[self.last] == key {
            self.last
        } else if let Some(&at) = self.index.get(&key) {
            at
        } else {
            let name = names.get(&key).cloned();
            let ids = &mut self.names;
            let metric = *self.name_ids.entry(name.clone()).or_insert_with(|| {
                ids.push(name);
                (ids.len() - 1) as u32
            });
            let device = key.0 & 0xFF;
            let built = &mut self.built;
            let series = *self.series_of.entry((device, metric)).or_insert_with(|| built.add(device, metric, key.0));
            self.keys.push(key);
            self.slots.push(series);
            self.index.insert(key, n);
            n
        };
        self.last = at;
        self.slots[at]
    }

    /// File one chunk's rows (columns typeId, metricId, timestamp, value).
    fn file(&mut self, names: &HashMap<(i64, i64), String>, cols: &IntColumns) {
        let [ty, metric, ts, value] = [&cols[0], &cols[1], &cols[2], &cols[3]];
        for i in 0..ty.len() {
            let slot = self.slot(names, (ty[i], metric[i]));
            self.built.push(slot, ts[i], value[i]);
        }
    }
}
