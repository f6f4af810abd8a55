//! Writing a stored trace as a timeline file: Perfetto protobuf (`TracePacket`/`TrackEvent`) or Chrome JSON.
//!
//! The caller declares tracks (a tree: process/device -> thread/stream -> category, and counter tracks),
//! then streams slices and counter samples as Arrow batches, each track's slices ordered by start. Memory
//! stays bounded: nothing is buffered but the write buffer, the interned names and, per track, the ends
//! of the slices still open. Both formats need the slices of one track to nest (an end closes the
//! innermost open slice), so a slice that overlaps without nesting (two kernels of one stream that
//! overlap by a few ns, a start/end NVTX range crossing another) goes to the first *lane*, a child track
//! `"<track> (overlap N)"`, where it nests; nothing is dropped or clipped.
mod chrome;
mod perfetto;
pub mod proto;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::error::{Error, Result};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Perfetto's protobuf trace (`Trace` of `TracePacket`s with `TrackEvent`s, interned names).
    Perfetto,
    /// The Chrome trace-event JSON format (`{"traceEvents": [...]}`), for small windows.
    ChromeJson,
}

impl Format {
    /// Parse `"perfetto"` or `"chrome-json"`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "perfetto" => Ok(Format::Perfetto),
            "chrome-json" => Ok(Format::ChromeJson),
            other => Err(Error::Invalid(format!("unknown timeline format {other:?} (perfetto, chrome-json)"))),
        }
    }
}

/// One declared track.
#[derive(Clone, Debug, Default)]
pub struct TrackInfo {
    /// Unique id (> 0), the Perfetto track uuid.
    pub uuid: u64,
    pub parent: Option<u64>,
    pub name: String,
    /// A process track (with `tid` None) or a thread track (with `tid`).
    pub pid: Option<i64>,
    pub tid: Option<i64>,
    /// A counter track (samples through `counters`), with this unit name.
    pub counter: bool,
    pub unit: Option<String>,
    /// Order among siblings (Perfetto `sibling_order_rank`; Chrome JSON `sort_index`).
    pub rank: i64,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tracks: u64,
    /// Lanes added for slices that overlap without nesting.
    pub overlap_lanes: u64,
    pub slices: u64,
    pub counters: u64,
    /// Slices that start a flow (a launch with GPU work) and slices that continue one (GPU work).
    pub flow_starts: u64,
    pub flow_steps: u64,
    /// Rows left out: no start, or (Perfetto) a negative timestamp, which `TracePacket.timestamp` cannot hold.
    pub skipped: u64,
    pub bytes: u64,
}

/// The format-specific encoder behind [`TraceWriter`].
trait Sink {
    fn track(&mut self, out: &mut dyn Write, t: &TrackInfo) -> std::io::Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn slice(
        &mut self,
        out: &mut dyn Write,
        track: u64,
        start: i64,
        end: i64,
        name: &str,
        flow_out: Option<u64>,
        flow_in: Option<u64>,
    ) -> std::io::Result<()>;
    fn counter(&mut self, out: &mut dyn Write, track: u64, ts: i64, value: f64) -> std::io::Result<()>;
    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()>;
    /// Whether negative timestamps can be written.
    fn signed_time(&self) -> bool;
}

struct Lane {
    uuid: u64,
    /// Ends of the slices open on this lane, innermost last.
    open: Vec<i64>,
}

struct TrackState {
    info: TrackInfo,
    lanes: Vec<Lane>,
    last_start: i64,
}

/// Counting writer, so the stats can say how large the file is without a `stat`.
struct Counted<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A timeline file being written.
pub struct TraceWriter {
    path: PathBuf,
    out: Counted<BufWriter<File>>,
    sink: Box<dyn Sink + Send>,
    tracks: HashMap<u64, TrackState>,
    next_lane_uuid: u64,
    stats: Stats,
}

/// Lane uuids live above every caller uuid (callers use small numbers).
const LANE_UUID_BASE: u64 = 1 << 62;

impl TraceWriter {
    /// Create (truncate) `path` and start a trace in `format`.
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        let file = File::create(path).map_err(|e| io_error(path, e))?;
        let mut out = Counted { inner: BufWriter::with_capacity(1 << 20, file), bytes: 0 };
        let sink: Box<dyn Sink + Send> = match format {
            Format::Perfetto => Box::new(perfetto::PerfettoSink::default()),
            Format::ChromeJson => Box::new(chrome::ChromeSink::start(&mut out).map_err(|e| io_error(path, e))?),
        };
        Ok(TraceWriter {
            path: path.to_path_buf(),
            out,
            sink,
            tracks: HashMap::new(),
            next_lane_uuid: LANE_UUID_BASE,
            stats: Stats::default(),
        })
    }

    /// Declare a track; its parent must be declared first.
    pub fn track(&mut self, info: TrackInfo) -> Result<()> {
        if info.uuid == 0 || info.uuid >= LANE_UUID_BASE {
            return Err(Error::Invalid(format!("track uuid {} out of range", info.uuid)));
        }
        if self.tracks.contains_key(&info.uuid) {
            return Err(Error::Invalid(format!("track {} declared twice", info.uuid)));
        }
        if let Some(p) = info.parent {
            if !self.tracks.contains_key(&p) {
                return Err(Error::Invalid(format!("track {}: parent {p} is not declared", info.uuid)));
            }
        }
        self.sink.track(&mut self.out, &info).map_err(|e| io_error(&self.path, e))?;
        self.stats.tracks += 1;
        let lane0 = Lane { uuid: info.uuid, open: Vec::new() };
        self.tracks.insert(info.uuid, TrackState { info, lanes: vec![lane0], last_start: i64::MIN });
        Ok(())
    }

    /// Write one slice `[start, end)` on `track` (slices of a track must come in order of start).
    /// `flow_out` starts a flow (the launching API call), `flow_in` continues it (the GPU work).
    #[allow(clippy::too_many_arguments)]
    pub fn slice(
        &mut self,
        track: u64,
        start: i64,
        end: i64,
        name: &str,
        flow_out: Option<u64>,
        flow_in: Option<u64>,
    ) -> Result<()> {
        if start < 0 && !self.sink.signed_time() {
            self.stats.skipped += 1;
            return Ok(());
        }
        let end = end.max(start);
        let state =
            self.tracks.get_mut(&track).ok_or_else(|| Error::Invalid(format!("slice on undeclared track {track}")))?;
        if state.info.counter {
            return Err(Error::Invalid(format!("slice on counter track {track} ({})", state.info.name)));
        }
        if start < state.last_start {
            return Err(Error::Invalid(format!(
                "slices of track {} ({}) are not ordered by start ({start} after {})",
                track, state.info.name, state.last_start
            )));
        }
        state.last_start = start;
        let mut chosen = None;
        for (i, lane) in state.lanes.iter_mut().enumerate() {
            // Slices that ended by `start` are closed for good: later slices start later still.
            while lane.open.last().is_some_and(|&e| e <= start) {
                lane.open.pop();
            }
            if lane.open.last().is_none_or(|&e| end <= e) {
                chosen = Some(i);
                break;
            }
        }
        let i = match chosen {
            Some(i) => i,
            None => {
                let n = state.lanes.len();
                let uuid = self.next_lane_uuid;
                self.next_lane_uuid += 1;
                let info = TrackInfo {
                    uuid,
                    parent: Some(track),
                    name: format!("{} (overlap {n})", state.info.name),
                    rank: n as i64,
                    ..TrackInfo::default()
                };
                self.sink.track(&mut self.out, &info).map_err(|e| io_error(&self.path, e))?;
                self.stats.overlap_lanes += 1;
                state.lanes.push(Lane { uuid, open: Vec::new() });
                n
            }
        };
        let lane = &mut state.lanes[i];
        lane.open.push(end);
        let uuid = lane.uuid;
        self.sink
            .slice(&mut self.out, uuid, start, end, name, flow_out, flow_in)
            .map_err(|e| io_error(&self.path, e))?;
        self.stats.slices += 1;
        self.stats.flow_starts += u64::from(flow_out.is_some());
        self.stats.flow_steps += u64::from(flow_in.is_some());
        Ok(())
    }

    /// Write one counter sample.
    pub fn counter(&mut self, track: u64, ts: i64, value: f64) -> Result<()> {
        if ts < 0 && !self.sink.signed_time() {
            self.stats.skipped += 1;
            return Ok(());
        }
        let state = self
            .tracks
            .get(&track)
            .ok_or_else(|| Error::Invalid(format!("counter sample on undeclared track {track}")))?;
        if !state.info.counter {
            return Err(Error::Invalid(format!("counter sample on slice track {track} ({})", state.info.name)));
        }
        self.sink.counter(&mut self.out, track, ts, value).map_err(|e| io_error(&self.path, e))?;
        self.stats.counters += 1;
        Ok(())
    }

    /// Write the slices of a batch: columns `track`, `start_ns`, `end_ns` (BIGINT), `name` (text), and
    /// optionally `flow_out`, `flow_in` (BIGINT, NULL for none). A row without `start_ns` is skipped; one
    /// without `end_ns` is an instant (zero length).
    pub fn slices_batch(&mut self, b: &RecordBatch) -> Result<()> {
        let track = int_column(b, "track")?;
        let start = int_column(b, "start_ns")?;
        let end = int_column(b, "end_ns")?;
        let flow_out = optional_int_column(b, "flow_out")?;
        let flow_in = optional_int_column(b, "flow_in")?;
        let names = column(b, "name")?;
        for row in 0..b.num_rows() {
            let (Some(t), Some(s)) = (track.get(row), start.get(row)) else {
                self.stats.skipped += 1;
                continue;
            };
            let e = end.get(row).unwrap_or(s);
            let name = string_at(names, row)?.unwrap_or("");
            let fo = flow_out.as_ref().and_then(|c| c.get(row)).map(|v| v as u64);
            let fi = flow_in.as_ref().and_then(|c| c.get(row)).map(|v| v as u64);
            self.slice(t as u64, s, e, name, fo, fi)?;
        }
        Ok(())
    }

    /// Write the counter samples of a batch: columns `track`, `ts_ns` (BIGINT), `value` (DOUBLE); rows
    /// with a NULL are skipped.
    pub fn counters_batch(&mut self, b: &RecordBatch) -> Result<()> {
        let track = int_column(b, "track")?;
        let ts = int_column(b, "ts_ns")?;
        let value = column(b, "value")?;
        if value.data_type() != &DataType::Float64 {
            return Err(Error::Invalid(format!("column value has type {}, expected DOUBLE", value.data_type())));
        }
        let value = value.as_primitive::<Float64Type>();
        for row in 0..b.num_rows() {
            match (track.get(row), ts.get(row), value.is_valid(row).then(|| value.value(row))) {
                (Some(t), Some(ts), Some(v)) => self.counter(t as u64, ts, v)?,
                _ => self.stats.skipped += 1,
            }
        }
        Ok(())
    }

    /// Close the trace (the JSON's closing brackets), flush, and return what was written.
    pub fn finish(mut self) -> Result<Stats> {
        self.sink.finish(&mut self.out).map_err(|e| io_error(&self.path, e))?;
        self.out.flush().map_err(|e| io_error(&self.path, e))?;
        self.out.inner.get_ref().sync_all().map_err(|e| io_error(&self.path, e))?;
        self.stats.bytes = self.out.bytes;
        Ok(self.stats)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::Invalid(format!("timeline rows lack column {name}")))
}

/// An integer column read as i64 values with NULLs (DuckDB gives INTEGER for small literals, BIGINT else).
enum Ints<'a> {
    I64(&'a arrow_array::PrimitiveArray<Int64Type>),
    I32(&'a arrow_array::PrimitiveArray<Int32Type>),
}

impl Ints<'_> {
    fn get(&self, row: usize) -> Option<i64> {
        match self {
            Ints::I64(v) => v.is_valid(row).then(|| v.value(row)),
            Ints::I32(v) => v.is_valid(row).then(|| i64::from(v.value(row))),
        }
    }
}

fn int_column<'a>(b: &'a RecordBatch, name: &str) -> Result<Ints<'a>> {
    let c = column(b, name)?;
    match c.data_type() {
        DataType::Int64 => Ok(Ints::I64(c.as_primitive::<Int64Type>())),
        DataType::Int32 => Ok(Ints::I32(c.as_primitive::<Int32Type>())),
        other => Err(Error::Invalid(format!("column {name} has type {other}, expected BIGINT"))),
    }
}

fn optional_int_column<'a>(b: &'a RecordBatch, name: &str) -> Result<Option<Ints<'a>>> {
    if b.column_by_name(name).is_none() {
        return Ok(None);
    }
    int_column(b, name).map(Some)
}

fn string_at(c: &dyn Array, row: usize) -> Result<Option<&str>> {
    if c.is_null(row) {
        return Ok(None);
    }
    Ok(Some(match c.data_type() {
        DataType::Utf8 => c.as_string::<i32>().value(row),
        DataType::LargeUtf8 => c.as_string::<i64>().value(row),
        DataType::Utf8View => c.as_string_view().value(row),
        other => return Err(Error::Invalid(format!("column name has type {other}, expected text"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_track(w: &mut TraceWriter) {
        w.track(TrackInfo { uuid: 1, name: "p".into(), pid: Some(7), ..Default::default() }).unwrap();
        w.track(TrackInfo {
            uuid: 2,
            parent: Some(1),
            name: "t".into(),
            pid: Some(7),
            tid: Some(8),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn overlapping_slices_go_to_lanes_and_nested_ones_stay() {
        let dir = std::env::temp_dir().join(format!("tf-lanes-{}", std::process::id()));
        let mut w = TraceWriter::create(&dir, Format::Perfetto).unwrap();
        thread_track(&mut w);
        w.slice(2, 0, 10, "a", None, None).unwrap();
        w.slice(2, 2, 5, "nested", None, None).unwrap();
        w.slice(2, 5, 8, "adjacent, nested", None, None).unwrap();
        w.slice(2, 9, 12, "crosses a's end", None, None).unwrap();
        w.slice(2, 12, 13, "after", None, None).unwrap();
        let stats = w.finish().unwrap();
        assert_eq!(stats.slices, 5);
        assert_eq!(stats.overlap_lanes, 1);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn unordered_slices_and_unknown_tracks_are_refused() {
        let dir = std::env::temp_dir().join(format!("tf-order-{}", std::process::id()));
        let mut w = TraceWriter::create(&dir, Format::ChromeJson).unwrap();
        thread_track(&mut w);
        w.slice(2, 5, 10, "a", None, None).unwrap();
        assert!(w.slice(2, 4, 10, "b", None, None).is_err());
        assert!(w.slice(3, 4, 10, "c", None, None).is_err());
        assert!(w.counter(2, 4, 1.0).is_err());
        w.finish().unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        assert!(text.starts_with('{') && text.trim_end().ends_with('}'));
        std::fs::remove_file(&dir).unwrap();
    }
}
