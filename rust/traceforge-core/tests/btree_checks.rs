//! The direct reader's checks of what SQLite relies on (issue 19): rowids strictly increasing within and
//! across leaves, interior keys bounding their children, each page referenced once; the full i64 rowid
//! range; chunks sized by pages, not rowid span; views and WITHOUT ROWID tables through SQLite.
//!
//! Each test builds a small database with rusqlite, damages bytes at offsets found by walking its pages,
//! and reads it back.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rusqlite::{params, Connection};
use traceforge_core::error::Error;
use traceforge_core::export::scan::{
    chunk_ranges, read_rows, scan_chunk_rows, scan_chunks_with, RowSink, ScanReader, CHUNK_ROWS,
};
use traceforge_core::export::ExportFile;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traceforge-btree-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// A table `t (a INTEGER, b TEXT)` with the given rowids, on 1024-byte pages (several levels for a few
/// thousand rows).
fn build(path: &Path, rowids: impl IntoIterator<Item = i64>) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA page_size = 1024; CREATE TABLE t (a INTEGER, b TEXT);").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = c.prepare("INSERT INTO t (rowid, a, b) VALUES (?1, ?2, ?3)").unwrap();
        for r in rowids {
            ins.execute(params![r, r.wrapping_mul(3), format!("row {r}")]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn varint(buf: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(8) {
        v = (v << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    ((v << 8) | u64::from(buf[8]), 9)
}

/// `v` as a varint of exactly `len` bytes (1 to 8), if it fits.
fn varint_of_len(v: u64, len: usize) -> Option<Vec<u8>> {
    if len == 0 || len > 8 || v >> (7 * len) != 0 {
        return None;
    }
    Some((0..len).map(|i| ((v >> (7 * (len - 1 - i))) & 0x7F) as u8 | if i + 1 < len { 0x80 } else { 0 }).collect())
}

/// The pages of a database file, for finding what to damage.
struct Pages {
    bytes: Vec<u8>,
    size: usize,
}

/// A cell of a table b-tree page: where its rowid (leaf) or key (interior) varint lies, its value, and for
/// an interior cell the child page.
#[derive(Debug, Clone, Copy)]
struct Cell {
    key_at: usize,
    key_len: usize,
    key: i64,
    child: u32,
}

impl Pages {
    fn read(path: &Path) -> Pages {
        let bytes = std::fs::read(path).unwrap();
        let size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            p => p as usize,
        };
        Pages { bytes, size }
    }
    fn hdr(&self, page: u32) -> usize {
        (page as usize - 1) * self.size + if page == 1 { 100 } else { 0 }
    }
    fn is_leaf(&self, page: u32) -> bool {
        self.bytes[self.hdr(page)] == 0x0D
    }
    fn cells(&self, page: u32) -> Vec<Cell> {
        let h = self.hdr(page);
        let base = (page as usize - 1) * self.size;
        let n = u16::from_be_bytes([self.bytes[h + 3], self.bytes[h + 4]]) as usize;
        let ptrs = h + if self.is_leaf(page) { 8 } else { 12 };
        (0..n)
            .map(|i| {
                let off = base + u16::from_be_bytes([self.bytes[ptrs + 2 * i], self.bytes[ptrs + 2 * i + 1]]) as usize;
                if self.is_leaf(page) {
                    let (_, n1) = varint(&self.bytes[off..]);
                    let (key, len) = varint(&self.bytes[off + n1..]);
                    Cell { key_at: off + n1, key_len: len, key: key as i64, child: 0 }
                } else {
                    let child = u32::from_be_bytes(self.bytes[off..off + 4].try_into().unwrap());
                    let (key, len) = varint(&self.bytes[off + 4..]);
                    Cell { key_at: off + 4, key_len: len, key: key as i64, child }
                }
            })
            .collect()
    }
    /// Overwrite a cell's rowid or key with `v`, keeping its length.
    fn set_key(&mut self, cell: Cell, v: i64) {
        let enc = varint_of_len(v as u64, cell.key_len).expect("the new key fits the old one's length");
        self.bytes[cell.key_at..cell.key_at + cell.key_len].copy_from_slice(&enc);
    }
    fn write(&self, path: &Path) {
        std::fs::write(path, &self.bytes).unwrap();
    }
}

fn root(path: &Path) -> u32 {
    let c = Connection::open(path).unwrap();
    c.query_row("SELECT rootpage FROM sqlite_master WHERE name = 't'", [], |r| r.get(0)).unwrap()
}

fn exprs() -> Vec<String> {
    vec!["\"a\"".into(), "\"b\"".into()]
}

/// Every row of `t`, read in chunks with `reader` (integer column `a` and the rowid-derived count).
fn chunked(file: &ExportFile, reader: ScanReader) -> Result<Vec<i64>, Error> {
    let cancel = AtomicBool::new(false);
    let parts = scan_chunks_with(file, "t", &exprs(), &[], 2, &cancel, reader, |c, _| c[0].clone())?;
    Ok(parts.concat())
}

fn assert_corrupt(what: &str, r: Result<impl std::fmt::Debug, Error>, page: u32) {
    match r {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(reason.contains(&format!("page {page}")), "{what}: the error names page {page}: {reason}");
        }
        other => panic!("{what}: expected a corruption error naming page {page}, got {other:?}"),
    }
}

/// A leaf of the tree below the root with at least `min_cells` cells of 2-byte rowids, and its parent.
fn middle_leaf(pages: &Pages, root: u32) -> (u32, u32) {
    let mut page = root;
    let mut parent = 0;
    while !pages.is_leaf(page) {
        let cells = pages.cells(page);
        parent = page;
        page = cells[cells.len() / 2].child;
    }
    assert!(parent != 0, "the table has more than one level");
    (page, parent)
}

#[test]
fn out_of_order_rowids_in_a_leaf_are_refused() {
    let path = tmp("order.sqlite");
    build(&path, 1..=3000);
    let mut pages = Pages::read(&path);
    let (leaf, _) = middle_leaf(&pages, root(&path));
    let cells = pages.cells(leaf);
    assert!(cells.len() > 6 && cells[0].key >= 128, "{cells:?}");
    let (first, last) = (cells[0].key, cells[cells.len() - 1].key);

    // A rowid above the leaf's range (the interior key above bounds it): a read of the rows before it used to
    // stop there silently.
    let mut damaged = Pages { bytes: pages.bytes.clone(), size: pages.size };
    damaged.set_key(cells[2], 16_000);
    let p = tmp("order_high.sqlite");
    damaged.write(&p);
    let file = ExportFile::open(&p).unwrap();
    assert_corrupt(
        "rowid above range",
        read_rows(&file, "t", &exprs(), &[], first, last + 1, ScanReader::Direct),
        leaf,
    );
    assert_corrupt("rowid above range, chunked", chunked(&file, ScanReader::Direct), leaf);

    // A rowid below its predecessor, inside the leaf's range: a read starting above it used to skip it.
    pages.set_key(cells[4], first + 1);
    pages.write(&p);
    let file = ExportFile::open(&p).unwrap();
    assert_corrupt(
        "rowid out of order",
        read_rows(&file, "t", &exprs(), &[], first + 3, last, ScanReader::Direct),
        leaf,
    );
    assert_corrupt("rowid out of order, chunked", chunked(&file, ScanReader::Direct), leaf);
    assert_corrupt("rowid out of order, auto", chunked(&file, ScanReader::Auto), leaf);
}

#[test]
fn interior_keys_must_bound_their_children() {
    let path = tmp("keys.sqlite");
    build(&path, 1..=3000);
    let mut pages = Pages::read(&path);
    let root = root(&path);
    let cells = pages.cells(root);
    assert!(cells.len() > 3 && !pages.is_leaf(root));
    // A key lowered below rowids its left child holds: a full scan walking the leaves reads every row, a
    // read seeking past the key loses them; now both are refused.
    let i = cells.len() / 2;
    let lowered = cells[i].key - 10;
    assert!(lowered > cells[i - 1].key);
    pages.set_key(cells[i], lowered);
    let p = tmp("keys_low.sqlite");
    pages.write(&p);
    let file = ExportFile::open(&p).unwrap();
    let child = cells[i].child;
    // The child's rowids above the key, or the page holding them, are named.
    let r = read_rows(&file, "t", &exprs(), &[], i64::MIN, i64::MAX, ScanReader::Direct);
    match &r {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("outside the range"), "{reason}"),
        other => panic!("lowered key read as {other:?}"),
    }
    assert!(pages.is_leaf(child));
    assert_corrupt("lowered key, chunked", chunked(&file, ScanReader::Direct), child);

    // Keys out of order within an interior page.
    let mut pages = Pages::read(&path);
    pages.set_key(cells[1], cells[0].key - 1);
    pages.write(&p);
    let file = ExportFile::open(&p).unwrap();
    assert_corrupt("keys out of order", chunked(&file, ScanReader::Direct), root);
    assert_corrupt(
        "keys out of order, full read",
        read_rows(&file, "t", &exprs(), &[], 0, 10, ScanReader::Direct),
        root,
    );
}

#[test]
fn a_page_referenced_twice_is_refused() {
    let path = tmp("twice.sqlite");
    build(&path, 1..=3000);
    let mut pages = Pages::read(&path);
    let root = root(&path);
    let cells = pages.cells(root);
    // Cell 2's child pointer made to point at cell 1's child.
    let at = cells[2].key_at - 4;
    pages.bytes[at..at + 4].copy_from_slice(&cells[1].child.to_be_bytes());
    let p = tmp("twice_bad.sqlite");
    pages.write(&p);
    let file = ExportFile::open(&p).unwrap();
    for reader in [ScanReader::Direct, ScanReader::Auto] {
        assert!(matches!(chunked(&file, reader), Err(Error::Corrupt { .. })), "{reader:?}");
    }
    let r = chunk_ranges(&file, "t", ScanReader::Direct);
    assert_corrupt("twice, chunk plan", r, cells[1].child);
    let r = read_rows(&file, "t", &exprs(), &[], i64::MIN, i64::MAX, ScanReader::Direct);
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
}

#[test]
fn an_empty_child_page_is_refused() {
    let path = tmp("empty_child.sqlite");
    build(&path, 1..=3000);
    let mut pages = Pages::read(&path);
    let (leaf, _) = middle_leaf(&pages, root(&path));
    // SQLite refuses a child page without cells (its cursor's check); so does the reader.
    let h = pages.hdr(leaf);
    pages.bytes[h + 3] = 0;
    pages.bytes[h + 4] = 0;
    let p = tmp("empty_child_bad.sqlite");
    pages.write(&p);
    let file = ExportFile::open(&p).unwrap();
    assert_corrupt("empty leaf", chunked(&file, ScanReader::Direct), leaf);
    let c = Connection::open(&p).unwrap();
    let sqlite: Result<Vec<i64>, _> =
        c.prepare("SELECT a FROM t").unwrap().query_map([], |r| r.get(0)).unwrap().collect();
    assert!(sqlite.is_err(), "SQLite refuses it too");
}

#[test]
fn rowid_i64_max_is_read() {
    let path = tmp("max.sqlite");
    build(&path, (1..=41).chain([i64::MAX]));
    let file = ExportFile::open(&path).unwrap();
    for reader in [ScanReader::Direct, ScanReader::Sqlite, ScanReader::Auto] {
        let rows = chunked(&file, reader).unwrap();
        assert_eq!(rows.len(), 42, "{reader:?}");
        assert_eq!(*rows.last().unwrap(), i64::MAX.wrapping_mul(3), "{reader:?}");
        // A read up to i64::MAX includes it.
        let (cols, _) = read_rows(&file, "t", &exprs(), &[], 40, i64::MAX, reader).unwrap();
        assert_eq!(cols[0].len(), 3, "{reader:?}");
    }
    // Alone in its table.
    let path = tmp("max_alone.sqlite");
    build(&path, [i64::MAX]);
    let file = ExportFile::open(&path).unwrap();
    for reader in [ScanReader::Direct, ScanReader::Sqlite] {
        assert_eq!(chunked(&file, reader).unwrap().len(), 1, "{reader:?}");
    }
}

/// A sink that counts its rows.
struct Counted(usize);

impl RowSink for Counted {
    type Out = usize;
    fn row(&mut self, _values: &[i64]) {
        self.0 += 1;
    }
    fn finish(self) -> usize {
        self.0
    }
}

#[test]
fn sparse_rowids_make_few_chunks() {
    let path = tmp("sparse.sqlite");
    // Rowids 2^40 apart, on both sides of zero: a span of ~2^49 in a file of a few hundred KB.
    let n = 2000i64;
    build(&path, (0..n).map(|i| (i - n / 2) << 40));
    let file = ExportFile::open(&path).unwrap();
    let pages = std::fs::metadata(&path).unwrap().len() as usize / 1024;
    for reader in [ScanReader::Direct, ScanReader::Sqlite] {
        let ranges = chunk_ranges(&file, "t", reader).unwrap();
        assert!(ranges.len() <= pages.div_ceil(4096) + 1, "{reader:?}: {} chunks for {pages} pages", ranges.len());
        assert_eq!((ranges[0].0, ranges.last().unwrap().1), (i64::MIN, i64::MAX));
        // What the chunks' buffers are sized for up front: bounded by the chunk count, not the span.
        let sized = AtomicUsize::new(0);
        let sinks = AtomicUsize::new(0);
        let cancel = AtomicBool::new(false);
        let rows: usize = scan_chunk_rows(&file, "t", &exprs()[..1], 2, &cancel, reader, |expected| {
            sized.fetch_add(expected, Ordering::Relaxed);
            sinks.fetch_add(1, Ordering::Relaxed);
            Counted(0)
        })
        .unwrap()
        .into_iter()
        .sum();
        assert_eq!(rows, n as usize, "{reader:?}");
        assert!(sinks.load(Ordering::Relaxed) <= 2, "{reader:?}: {} chunks", sinks.load(Ordering::Relaxed));
        assert!(sized.load(Ordering::Relaxed) <= 2 * CHUNK_ROWS as usize, "{reader:?}");
        assert_eq!(chunked(&file, reader).unwrap().len(), n as usize);
    }
}

#[test]
fn dense_tables_are_cut_by_pages() {
    let path = tmp("dense.sqlite");
    build(&path, 1..=60_000);
    let file = ExportFile::open(&path).unwrap();
    let ranges = chunk_ranges(&file, "t", ScanReader::Direct).unwrap();
    // ~1,000 leaves of 1 KiB, 4,096 to a chunk: one chunk.
    assert_eq!(ranges, vec![(i64::MIN, i64::MAX)]);
    assert_eq!(chunked(&file, ScanReader::Direct).unwrap(), chunked(&file, ScanReader::Sqlite).unwrap());
    // A bigger table on 512-byte pages: several chunks, cut between leaves, the same rows both ways.
    let path = tmp("dense_big.sqlite");
    let c = Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA page_size = 512; CREATE TABLE t (a INTEGER, b TEXT);").unwrap();
    c.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
         INSERT INTO t SELECT i * 3, 'row ' || i FROM n;",
    )
    .unwrap();
    drop(c);
    let file = ExportFile::open(&path).unwrap();
    let ranges = chunk_ranges(&file, "t", ScanReader::Direct).unwrap();
    let leaves = std::fs::metadata(&path).unwrap().len() as usize / 512;
    assert!(ranges.len() >= 2 && ranges.len() <= leaves / 8192 + 2, "{} chunks", ranges.len());
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, w[1].0);
    }
    assert_eq!(chunk_ranges(&file, "t", ScanReader::Sqlite).unwrap(), ranges);
    let direct = chunked(&file, ScanReader::Direct).unwrap();
    assert_eq!(direct.len(), 400_000);
    assert_eq!(direct, chunked(&file, ScanReader::Sqlite).unwrap());
}

#[test]
fn views_and_without_rowid_tables_go_through_sqlite() {
    let path = tmp("norowid.sqlite");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE real_t (a INTEGER, b TEXT);
         INSERT INTO real_t VALUES (1, 'x'), (2, 'y'), (3, 'z');
         CREATE TABLE w (a INTEGER PRIMARY KEY, b TEXT) WITHOUT ROWID;
         INSERT INTO w VALUES (5, 'five'), (6, 'six');
         CREATE VIEW t AS SELECT a, b FROM real_t WHERE a > 1;",
    )
    .unwrap();
    drop(c);
    let file = ExportFile::open(&path).unwrap();
    let cancel = AtomicBool::new(false);
    for (table, want) in [("t", vec![2i64, 3]), ("w", vec![5, 6])] {
        for reader in [ScanReader::Auto, ScanReader::Sqlite] {
            let parts = scan_chunks_with(&file, table, &exprs(), &exprs(), 2, &cancel, reader, |c, t| (c, t))
                .unwrap_or_else(|e| panic!("{table} {reader:?}: {e}"));
            let ints: Vec<i64> = parts.iter().flat_map(|p| p.0[0].clone()).collect();
            assert_eq!(ints, want, "{table} {reader:?}");
            let rows = scan_chunk_rows(&file, table, &exprs()[..1], 2, &cancel, reader, |_| Counted(0));
            assert_eq!(rows.unwrap().into_iter().sum::<usize>(), 2, "{table} {reader:?}");
        }
        assert!(matches!(
            read_rows(&file, table, &exprs(), &[], i64::MIN, i64::MAX, ScanReader::Direct),
            Err(Error::Invalid(_))
        ));
    }
}

#[test]
fn an_uncheckpointed_wal_is_refused() {
    let path = tmp("wal.sqlite");
    let c = Connection::open(&path).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    c.execute_batch(
        "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (a INTEGER, b TEXT); INSERT INTO t VALUES (1, 'x');",
    )
    .unwrap();
    // Copies taken while the writer holds the log open: the rows live only in the -wal.
    let copy = tmp("wal_copy.sqlite");
    std::fs::copy(&path, &copy).unwrap();
    let wal = PathBuf::from(format!("{}-wal", copy.display()));
    std::fs::copy(format!("{}-wal", path.display()), &wal).unwrap();
    drop(c);
    match ExportFile::open(&copy) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("write-ahead log"), "{reason}"),
        other => panic!("a stale read was possible: {other:?}"),
    }
    // Checkpointed (the log gone), it reads.
    std::fs::remove_file(&wal).unwrap();
    let _ = std::fs::remove_file(format!("{}-shm", copy.display()));
    assert!(ExportFile::open(&path).is_ok());
}
