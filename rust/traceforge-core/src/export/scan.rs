//! Parallel table scans by rowid range.
//!
//! Each worker reads slices `[lo, hi)` of rowids on its own file handle, so a multi-GB table is read by every
//! core at once without holding the file in memory. Integer cells arrive as i64 with NULL mapped to
//! [`crate::ids::NULL_I64`].
//!
//! How each chunk is read (the direct b-tree reader or SQLite) is the [`super::plan`]'s choice; the
//! caller picks the reader with [`ScanReader`] ([`ScanReader::chosen`] honours `TRACEFORGE_SQLITE_SCAN`).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use super::open::ExportFile;
use super::plan::{Chunks, ScanPlan, Slicer};
pub use super::plan::{IntColumns, RowSink, ScanReader, TextColumns, CHUNK_BYTES, CHUNK_ROWS};
use crate::error::{Error, Result};

/// The `[min, max]` rowid range of `table` as `reader` sees it, or None for an empty table.
pub fn rowid_bounds_with(file: &ExportFile, table: &str, reader: ScanReader) -> Result<Option<(i64, i64)>> {
    let conn = file.connect()?;
    let plan = ScanPlan::build(file, &conn, table, &[], &[], reader)?;
    plan.bounds(file, &conn, table)
}

/// Read the rows of `table` with `lo <= rowid < hi` with the chosen reader (one thread).
pub fn read_rows(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    lo: i64,
    hi: i64,
    reader: ScanReader,
) -> Result<(IntColumns, TextColumns)> {
    let conn = file.connect()?;
    let plan = ScanPlan::build(file, &conn, table, exprs, text_exprs, reader)?;
    let mut slicer = if plan.is_direct() { plan.open(file)? } else { Slicer::Sqlite(conn) };
    let expected = (i128::from(hi) - i128::from(lo)).clamp(0, i128::from(CHUNK_ROWS)) as usize;
    plan.read(file, &mut slicer, table, exprs, text_exprs, (lo, hi), expected)
}

/// The rowid ranges a whole-table scan of `table` with `reader` is cut into, in order (the last one's
/// `i64::MAX` end inclusive): by pages where the b-tree can be walked, so their count follows the table's
/// size, not its rowids' spread.
pub fn chunk_ranges(file: &ExportFile, table: &str, reader: ScanReader) -> Result<Vec<(i64, i64)>> {
    Ok(prepare(file, table, &[], &[], reader)?.1.ranges)
}

/// The plan and chunks of a scan, from one connection.
fn prepare(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    reader: ScanReader,
) -> Result<(ScanPlan, Chunks)> {
    let conn = file.connect()?;
    let plan = ScanPlan::build(file, &conn, table, exprs, text_exprs, reader)?;
    let chunks = plan.chunks(file, &conn, table)?;
    Ok((plan, chunks))
}

/// Read a whole table with `threads` workers and `reader`, mapping each rowid chunk with `map` as soon
/// as it is read (so a compact form replaces the raw i64 columns chunk by chunk); results come back in
/// rowid order.
#[allow(clippy::too_many_arguments)]
pub fn scan_chunks_with<T: Send>(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    reader: ScanReader,
    map: impl Fn(IntColumns, TextColumns) -> T + Sync,
) -> Result<Vec<T>> {
    let (plan, chunks) = prepare(file, table, exprs, text_exprs, reader)?;
    let parts = scan_ranges(file, &plan, &chunks, threads, cancel, |slicer, range, expected| {
        let (cols, texts) = plan.read(file, slicer, table, exprs, text_exprs, range, expected)?;
        Ok(map(cols, texts))
    })?;
    plan.verify_sqlite(file, table)?;
    Ok(parts)
}

/// Read a whole table with `threads` workers, each rowid chunk's rows going to a sink made for it by
/// `sink(expected_rows)`; the chunks' results come back in rowid order.
pub fn scan_chunk_rows<S: RowSink>(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    reader: ScanReader,
    sink: impl Fn(usize) -> S + Sync,
) -> Result<Vec<S::Out>>
where
    S::Out: Send,
{
    let (plan, chunks) = prepare(file, table, exprs, &[], reader)?;
    let parts = scan_ranges(file, &plan, &chunks, threads, cancel, |slicer, range, expected| {
        let mut chunk = sink(expected);
        plan.read_rows(file, slicer, table, exprs, range, &mut chunk)?;
        Ok(chunk.finish())
    })?;
    plan.verify_sqlite(file, table)?;
    Ok(parts)
}

/// Run `read` over `chunks` on `threads` workers, each with its own reader (and told the rows to expect);
/// results in rowid order, or the first error.
fn scan_ranges<T: Send>(
    file: &ExportFile,
    plan: &ScanPlan,
    chunks: &Chunks,
    threads: usize,
    cancel: &AtomicBool,
    read: impl Fn(&mut Slicer, (i64, i64), usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let ranges = &chunks.ranges;
    let results: Vec<Mutex<Option<T>>> = ranges.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, ranges.len().max(1)) {
            s.spawn(|| {
                let mut slicer = match plan.open(file) {
                    Ok(s) => s,
                    Err(e) => {
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                        return;
                    }
                };
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ranges.len() {
                        return;
                    }
                    match read(&mut slicer, ranges[i], chunks.expected_rows(i)) {
                        Ok(out) => *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(out),
                        Err(e) => {
                            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(results.into_iter().filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())).collect())
}

/// Read a whole table into memory with `threads` workers and `reader`, preserving rowid order.
pub(crate) fn scan_table(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    reader: ScanReader,
) -> Result<(IntColumns, TextColumns)> {
    let parts = scan_chunks_with(file, table, exprs, text_exprs, threads, cancel, reader, |c, t| (c, t))?;
    let mut cols: IntColumns = vec![Vec::new(); exprs.len()];
    let mut texts: TextColumns = vec![Vec::new(); text_exprs.len()];
    let total: usize = parts.iter().map(|p| p.0.first().map_or(0, Vec::len)).sum();
    for c in cols.iter_mut() {
        c.reserve_exact(total);
    }
    for (part, part_texts) in parts {
        for (dst, src) in cols.iter_mut().zip(part) {
            dst.extend_from_slice(&src);
        }
        for (dst, src) in texts.iter_mut().zip(part_texts) {
            dst.extend(src);
        }
    }
    Ok((cols, texts))
}

/// Stream a table's chunks in rowid order through `sink`, read by `threads` workers (bounded memory:
/// workers block once a few chunks wait for the consumer).
#[allow(clippy::too_many_arguments)]
pub(crate) fn stream_table_ordered<T>(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    reader: ScanReader,
    wrap: impl Fn(IntColumns) -> T,
    sink: SyncSender<Result<T>>,
) {
    let (plan, chunks) = match prepare(file, table, exprs, &[], reader) {
        Ok(p) => p,
        Err(e) => {
            let _ = sink.send(Err(e));
            return;
        }
    };
    let ranges = &chunks.ranges;
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<IntColumns>)>(threads.max(1) * 2);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, ranges.len().max(1)) {
            let tx = tx.clone();
            let chunks = &chunks;
            let next = &next;
            let plan = &plan;
            s.spawn(move || {
                let mut slicer = match plan.open(file) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send((usize::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ranges.len() {
                        return;
                    }
                    let item = plan.read(file, &mut slicer, table, exprs, &[], ranges[i], chunks.expected_rows(i));
                    let item = item.map(|(c, _)| c);
                    let failed = item.is_err();
                    if tx.send((i, item)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0usize;
        // Consuming `rx` here drops it on return, so workers blocked on `send` wake up and stop.
        for (i, item) in rx {
            if item.is_err() {
                let _ = sink.send(item.map(&wrap));
                cancel_consumers(&next, ranges.len());
                return;
            }
            pending.insert(i, item);
            while let Some(item) = pending.remove(&want) {
                want += 1;
                if sink.send(item.map(&wrap)).is_err() {
                    cancel_consumers(&next, ranges.len());
                    return;
                }
            }
        }
        // Every chunk went out: a table read through SQLite ends with the check of its ranges.
        if want == ranges.len() && !cancel.load(Ordering::Relaxed) {
            if let Err(e) = plan.verify_sqlite(file, table) {
                let _ = sink.send(Err(e));
            }
        }
    });
}

/// Make workers stop picking chunks (the consumer went away or an error was reported).
fn cancel_consumers(next: &AtomicUsize, len: usize) {
    next.store(len, Ordering::Relaxed);
}
