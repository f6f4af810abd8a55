//! Parallel table scans by rowid range.
//!
//! Each worker opens its own read-only connection and reads a slice `[lo, hi)` of rowids, so a multi-GB
//! table is read by every core at once without holding the file in memory. Integer cells arrive as i64
//! with NULL mapped to [`NULL_I64`].
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use rusqlite::types::ValueRef;

use super::open::ExportFile;
use super::NULL_I64;
use crate::error::{Error, Result};

/// Column-major integer rows of one table slice.
pub type IntColumns = Vec<Vec<i64>>;

/// Column-major text cells of one table slice.
pub type TextColumns = Vec<Vec<Option<String>>>;

/// Rows per unit of work handed to a scanning thread.
pub const CHUNK_ROWS: i64 = 1 << 16;

/// The `[min, max]` rowid range of `table`, or None for an empty table.
pub fn rowid_bounds(file: &ExportFile, table: &str) -> Result<Option<(i64, i64)>> {
    let conn = file.connect()?;
    // Two queries: SQLite answers a lone min(rowid) or max(rowid) from the b-tree's edge, but scans the
    // whole table when both are asked in one SELECT.
    let edge = |agg: &str| -> Result<Option<i64>> {
        conn.query_row(&format!("SELECT {agg}(rowid) FROM \"{table}\""), [], |r| r.get(0))
            .map_err(|e| file.sqlite_error(e))
    };
    let (lo, hi) = (edge("min")?, edge("max")?);
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) => Some((lo, hi)),
        _ => None,
    })
}

#[inline]
fn cell_to_i64(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        ValueRef::Null => NULL_I64,
        ValueRef::Real(f) => f as i64,
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(NULL_I64),
        ValueRef::Blob(_) => NULL_I64,
    }
}

/// Read one rowid slice: `exprs` are SQL expressions (column names or NULL), `text_exprs` text columns.
fn read_slice(
    file: &ExportFile,
    conn: &rusqlite::Connection,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    lo: i64,
    hi: i64,
) -> Result<(IntColumns, TextColumns)> {
    let select: Vec<&str> = exprs.iter().chain(text_exprs.iter()).map(String::as_str).collect();
    let sql = format!("SELECT {} FROM \"{table}\" WHERE rowid >= ?1 AND rowid < ?2", select.join(", "));
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| file.sqlite_error(e))?;
    let mut rows = stmt.query([lo, hi]).map_err(|e| file.sqlite_error(e))?;
    let mut cols: IntColumns = vec![Vec::new(); exprs.len()];
    let mut texts: Vec<Vec<Option<String>>> = vec![Vec::new(); text_exprs.len()];
    while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
        for (i, col) in cols.iter_mut().enumerate() {
            col.push(cell_to_i64(row.get_ref(i).map_err(|e| file.sqlite_error(e))?));
        }
        for (j, col) in texts.iter_mut().enumerate() {
            let v = row.get_ref(exprs.len() + j).map_err(|e| file.sqlite_error(e))?;
            col.push(match v {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Integer(i) => Some(i.to_string()),
                _ => None,
            });
        }
    }
    Ok((cols, texts))
}

/// Read a whole table with `threads` workers, mapping each rowid chunk with `map` as soon as it is read
/// (so a compact form replaces the raw i64 columns chunk by chunk); results come back in rowid order.
pub fn scan_chunks<T: Send>(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    map: impl Fn(IntColumns, TextColumns) -> T + Sync,
) -> Result<Vec<T>> {
    let Some((lo, hi)) = rowid_bounds(file, table)? else {
        return Ok(Vec::new());
    };
    let ranges = split_range(lo, hi);
    let results: Vec<Mutex<Option<T>>> = ranges.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, ranges.len().max(1)) {
            s.spawn(|| {
                let conn = match file.connect() {
                    Ok(c) => c,
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
                    match read_slice(file, &conn, table, exprs, text_exprs, ranges[i].0, ranges[i].1) {
                        Ok((cols, texts)) => {
                            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(map(cols, texts))
                        }
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

/// Read a whole table into memory with `threads` workers, preserving rowid order.
pub fn scan_table(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
) -> Result<(IntColumns, TextColumns)> {
    let parts = scan_chunks(file, table, exprs, text_exprs, threads, cancel, |c, t| (c, t))?;
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
pub fn stream_table_ordered<T>(
    file: &ExportFile,
    table: &str,
    exprs: &[String],
    threads: usize,
    cancel: &AtomicBool,
    wrap: impl Fn(IntColumns) -> T,
    sink: SyncSender<Result<T>>,
) {
    let bounds = match rowid_bounds(file, table) {
        Ok(b) => b,
        Err(e) => {
            let _ = sink.send(Err(e));
            return;
        }
    };
    let Some((lo, hi)) = bounds else { return };
    let ranges = split_range(lo, hi);
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<IntColumns>)>(threads.max(1) * 2);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, ranges.len().max(1)) {
            let tx = tx.clone();
            let ranges = &ranges;
            let next = &next;
            s.spawn(move || {
                let conn = match file.connect() {
                    Ok(c) => c,
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
                    let item = read_slice(file, &conn, table, exprs, &[], ranges[i].0, ranges[i].1).map(|(c, _)| c);
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
    });
}

/// Make workers stop picking chunks (the consumer went away or an error was reported).
fn cancel_consumers(next: &AtomicUsize, len: usize) {
    next.store(len, Ordering::Relaxed);
}

fn split_range(lo: i64, hi: i64) -> Vec<(i64, i64)> {
    let mut ranges = Vec::new();
    let mut start = lo;
    while start <= hi {
        let end = start.saturating_add(CHUNK_ROWS).min(hi.saturating_add(1));
        ranges.push((start, end));
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::split_range;

    #[test]
    fn ranges_cover_every_rowid_once() {
        let r = split_range(1, 200_000);
        assert_eq!(r.first().unwrap().0, 1);
        assert_eq!(r.last().unwrap().1, 200_001);
        for w in r.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        assert_eq!(split_range(5, 5), vec![(5, 6)]);
    }
}
