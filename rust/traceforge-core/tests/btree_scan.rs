//! The direct b-tree reader against SQLite itself: same rows, same conversions, on real exports and on
//! databases built here to pin the file format's corners; and no panic or hang on corrupt files.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{params, Connection};
use traceforge_core::error::Error;
use traceforge_core::export::scan::{
    read_rows, rowid_bounds_with, scan_chunk_rows, scan_chunks_with, RowSink, ScanReader,
};
use traceforge_core::export::ExportFile;

fn tmp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traceforge-btree-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tmp(name: &str) -> PathBuf {
    let p = tmp_dir().join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn fixtures() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// The real exports present: the small one as shipped, the llama one decompressed once with `xz`.
fn real_exports() -> Vec<PathBuf> {
    static LLAMA: OnceLock<Option<PathBuf>> = OnceLock::new();
    let mut out = Vec::new();
    let small = fixtures().join("small_matmul_h100_nsys2025.3.sqlite");
    if small.exists() {
        out.push(small);
    } else {
        eprintln!("skipping: {} not present", small.display());
    }
    let llama = LLAMA.get_or_init(|| {
        let xz = fixtures().join("llama1b_n1_h100_nsys2025.3.sqlite.xz");
        if !xz.exists() {
            eprintln!("skipping: {} not present", xz.display());
            return None;
        }
        let out = tmp("llama1b_n1.sqlite");
        let file = std::fs::File::create(&out).unwrap();
        match std::process::Command::new("xz").arg("-dc").arg(&xz).stdout(file).status() {
            Ok(s) if s.success() => Some(out),
            other => {
                eprintln!("skipping llama fixture: xz -dc failed ({other:?})");
                None
            }
        }
    });
    out.extend(llama.clone());
    out
}

/// Tables (not views) and their columns, straight from SQLite.
fn tables(path: &Path) -> Vec<(String, Vec<String>)> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|n| {
            let cols: Vec<String> = c
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .unwrap()
                .query_map([&n], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (n, cols)
        })
        .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn quoted(cols: &[String]) -> Vec<String> {
    cols.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect()
}

/// Every column as an integer and as text, plus a NULL, read both ways over full, random, empty and
/// past-the-end ranges; returns the rows the full scan found.
fn compare_table(file: &ExportFile, table: &str, cols: &[String], rng: &mut Rng) -> usize {
    let mut exprs = quoted(cols);
    exprs.push("NULL".into());
    let texts = quoted(cols);
    let bounds = rowid_bounds_with(file, table, ScanReader::Sqlite).unwrap();
    assert_eq!(rowid_bounds_with(file, table, ScanReader::Direct).unwrap(), bounds, "{table}: bounds");
    let (lo, hi) = bounds.unwrap_or((0, 0));
    let span = (i128::from(hi) - i128::from(lo)).clamp(1, 1 << 62) as u64;
    let mut ranges = vec![
        (i64::MIN, i64::MAX),
        (lo, hi.saturating_add(1)),
        (hi.saturating_add(1), hi.saturating_add(1000)),
        (lo, lo),
        (hi, lo),
        (lo.saturating_sub(50), lo),
    ];
    for _ in 0..6 {
        let a = lo.saturating_sub(5).saturating_add(rng.below(span.saturating_add(10)) as i64);
        let b = a.saturating_add(rng.below(span / 3 + 2) as i64);
        ranges.push((a, b));
    }
    let mut full = 0;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let sqlite = read_rows(file, table, &exprs, &texts, a, b, ScanReader::Sqlite).unwrap();
        let direct = read_rows(file, table, &exprs, &texts, a, b, ScanReader::Direct)
            .unwrap_or_else(|e| panic!("{table} [{a}, {b}): direct read failed: {e}"));
        assert_eq!(direct.0.len(), sqlite.0.len());
        for (c, (d, s)) in direct.0.iter().zip(&sqlite.0).enumerate() {
            assert_eq!(d, s, "{table} [{a}, {b}): integer column {}", exprs[c]);
        }
        for (c, (d, s)) in direct.1.iter().zip(&sqlite.1).enumerate() {
            assert_eq!(d, s, "{table} [{a}, {b}): text column {}", texts[c]);
        }
        if i == 0 {
            full = sqlite.0[0].len();
        }
    }
    // The threaded scan in chunks, both ways (split_range makes one chunk per 65,536 rowids of the span, so
    // only for tables whose rowids are not spread over most of the i64 range).
    if span > 1 << 30 {
        return full;
    }
    let cancel = AtomicBool::new(false);
    let scan = |reader| {
        scan_chunks_with(file, table, &exprs, &texts, 2, &cancel, reader, |c, t| (c, t)).unwrap().into_iter().fold(
            (vec![Vec::new(); exprs.len()], vec![Vec::new(); texts.len()]),
            |mut acc, (c, t)| {
                acc.0.iter_mut().zip(c).for_each(|(a, c)| a.extend(c));
                acc.1.iter_mut().zip(t).for_each(|(a, t)| a.extend(t));
                acc
            },
        )
    };
    assert!(scan(ScanReader::Direct) == scan(ScanReader::Sqlite), "{table}: chunked scans differ");
    // Rows handed to a sink as they are decoded: the same integer rows, in the same order, both ways.
    let by_rows =
        |reader| scan_chunk_rows(file, table, &exprs, 2, &cancel, reader, |_| Rows(Vec::new())).unwrap().concat();
    let columns = scan(ScanReader::Sqlite).0;
    let expected: Vec<Vec<i64>> =
        (0..columns.first().map_or(0, Vec::len)).map(|i| columns.iter().map(|c| c[i]).collect()).collect();
    assert!(by_rows(ScanReader::Direct) == expected, "{table}: rows to a sink differ (direct)");
    assert!(by_rows(ScanReader::Sqlite) == expected, "{table}: rows to a sink differ (SQLite)");
    full
}

/// A row sink that keeps every row.
struct Rows(Vec<Vec<i64>>);

impl RowSink for Rows {
    type Out = Vec<Vec<i64>>;
    fn row(&mut self, values: &[i64]) {
        self.0.push(values.to_vec());
    }
    fn finish(self) -> Self::Out {
        self.0
    }
}

#[test]
fn real_exports_read_the_same_both_ways() {
    let mut rng = Rng(0x5EED);
    for path in real_exports() {
        let file = ExportFile::open(&path).unwrap();
        let mut rows = 0;
        for (table, cols) in tables(&path) {
            rows += compare_table(&file, &table, &cols, &mut rng);
        }
        eprintln!("{}: {rows} rows compared", path.display());
        assert!(rows > 1000);
        if path.starts_with(tmp_dir()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Levels of the table b-tree rooted at `root`, following left-most children.
fn depth(path: &Path, table: &str) -> usize {
    let c = Connection::open(path).unwrap();
    let mut page: u32 =
        c.query_row("SELECT rootpage FROM sqlite_master WHERE name = ?1", [table], |r| r.get(0)).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        p => p as usize,
    };
    let mut levels = 1;
    loop {
        let base = (page as usize - 1) * page_size;
        let hdr = base + if page == 1 { 100 } else { 0 };
        if bytes[hdr] != 0x05 {
            return levels;
        }
        let first = base + u16::from_be_bytes([bytes[hdr + 12], bytes[hdr + 13]]) as usize;
        page = u32::from_be_bytes(bytes[first..first + 4].try_into().unwrap());
        levels += 1;
    }
}

/// A database exercising the record format and b-tree shapes, with `page_size` and `reserved` bytes per page.
fn build_corner_cases(path: &Path, page_size: u32, reserved: i32, wal: bool) {
    let c = Connection::open(path).unwrap();
    if reserved > 0 {
        // No pragma sets reserved bytes; the file control does, on a database not yet written.
        let mut n = reserved;
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                c.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_RESERVE_BYTES,
                (&mut n as *mut i32).cast(),
            )
        };
        assert_eq!(rc, 0);
    }
    c.execute_batch(&format!("PRAGMA page_size = {page_size};")).unwrap();
    if wal {
        c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    }
    c.execute_batch(
        "CREATE TABLE mixed (a INTEGER, b TEXT, c BLOB, d REAL, e, f NUMERIC);
         CREATE TABLE ipk (id INTEGER PRIMARY KEY, v INTEGER);
         CREATE TABLE ipk_desc (id INTEGER PRIMARY KEY DESC, v INTEGER);
         CREATE TABLE altered (a INTEGER, b TEXT);
         CREATE TABLE deep (a INTEGER, b INTEGER, c TEXT);
         CREATE TABLE empty (a INTEGER, b TEXT);
         CREATE TABLE no_rowid (k INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID;
         CREATE VIEW a_view AS SELECT a, b FROM deep;",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = c.prepare("INSERT INTO mixed VALUES (?1, ?2, ?3, ?4, ?5, ?6)").unwrap();
        let long =
            |n: usize, seed: u8| -> String { (0..n).map(|i| (b'a' + ((i as u8) ^ seed) % 26) as char).collect() };
        let ints =
            [0i64, 1, -1, 127, -128, 255, 32767, -32768, 1 << 23, -(1 << 23), 1 << 31, 1 << 47, i64::MIN, i64::MAX];
        for (i, &v) in ints.iter().enumerate() {
            ins.execute(params![v, v, v, v, v, v]).unwrap();
            ins.execute(params![v as f64 + 0.5, format!(" {v} "), vec![i as u8; i], v as f64, v as f64, v as f64])
                .unwrap();
        }
        let ps = page_size as usize;
        for n in [0usize, 1, 100, ps / 2, ps - 40, ps - 35, ps, ps + 1, 3 * ps + 17, 7 * ps] {
            let text = long(n, n as u8);
            // Long text in every column kind, including the integer column, and in a blob.
            ins.execute(params![text, text, text.as_bytes(), n as i64, text, n as i64]).unwrap();
            ins.execute(params![n as i64, rusqlite::types::Null, text.as_bytes(), 1.25, n as i64, text]).unwrap();
        }
        for (a, b) in [("42", "x"), ("  -7  ", "é"), ("abc", ""), ("1e3", "12"), ("9223372036854775808", "NaN")] {
            ins.execute(params![a, b, b.as_bytes(), a, a, a]).unwrap();
        }
        ins.execute(params![rusqlite::types::Null, rusqlite::types::Null, rusqlite::types::Null, 1e300, -2.75, 3.0])
            .unwrap();
        // Invalid UTF-8 in a text column (SQLite stores what it is given).
        c.execute("INSERT INTO mixed (a, b) VALUES (CAST(x'FF41' AS TEXT), CAST(x'C328' AS TEXT))", []).unwrap();

        let mut ipk = c.prepare("INSERT INTO ipk VALUES (?1, ?2)").unwrap();
        let mut desc = c.prepare("INSERT INTO ipk_desc VALUES (?1, ?2)").unwrap();
        for id in [-1_000_000i64, -5, 0, 3, 17, 1 << 40, i64::MAX - 1, i64::MAX] {
            ipk.execute(params![id, id / 2]).unwrap();
            desc.execute(params![id, id / 3]).unwrap();
        }

        let mut alt = c.prepare("INSERT INTO altered VALUES (?1, ?2)").unwrap();
        for i in 0..50i64 {
            alt.execute(params![i, format!("row {i}")]).unwrap();
        }
        let mut deep = c.prepare("INSERT INTO deep VALUES (?1, ?2, ?3)").unwrap();
        for i in 0..30_000i64 {
            deep.execute(params![i * 7, i % 13, if i % 11 == 0 { None } else { Some(format!("t{i}")) }]).unwrap();
        }
        c.execute("INSERT INTO no_rowid VALUES (1, 'one'), (2, 'two')", []).unwrap();
    }
    tx.commit().unwrap();
    c.execute_batch(
        "ALTER TABLE altered ADD COLUMN x INTEGER DEFAULT 7;
         ALTER TABLE altered ADD COLUMN y TEXT DEFAULT 'it''s';
         ALTER TABLE altered ADD COLUMN z;
         ALTER TABLE altered ADD COLUMN w REAL DEFAULT 2.5;
         ALTER TABLE altered ADD COLUMN n NUMERIC DEFAULT -3;
         INSERT INTO altered VALUES (100, 'new', 1, 'set', 2, 3, 4);
         INSERT INTO altered (a) VALUES (101);
         -- Non-contiguous rowids, and pages freed in the middle of the tree.
         DELETE FROM deep WHERE a % 5 = 0 OR (rowid > 10000 AND rowid < 14000);
         DELETE FROM mixed WHERE rowid % 4 = 3;",
    )
    .unwrap();
}

#[test]
fn built_exports_read_the_same_both_ways() {
    let mut rng = Rng(42);
    // (page size, reserved bytes, WAL)
    for (ps, reserved, wal) in
        [(512u32, 0, false), (4096, 0, false), (65536, 0, false), (1024, 32, false), (4096, 0, true)]
    {
        let path = tmp(&format!("corners_{ps}_{reserved}_{wal}.sqlite"));
        build_corner_cases(&path, ps, reserved, wal);
        let header = std::fs::read(&path).unwrap();
        assert_eq!(header[20] as i32, reserved, "reserved bytes took effect");
        assert_eq!(header[18], if wal { 2 } else { 1 });
        if ps == 512 {
            assert!(depth(&path, "deep") >= 3, "deep is {} levels", depth(&path, "deep"));
        }
        let file = ExportFile::open(&path).unwrap();
        for (table, cols) in tables(&path) {
            if table == "no_rowid" {
                continue;
            }
            compare_table(&file, &table, &cols, &mut rng);
        }
        // A WITHOUT ROWID table and a view are read by SQLite: Direct refuses, Auto behaves as before.
        for (table, cols) in
            [("no_rowid", vec!["k".to_string(), "v".to_string()]), ("a_view", vec!["a".into(), "b".into()])]
        {
            let exprs = quoted(&cols);
            let direct = read_rows(&file, table, &exprs, &[], i64::MIN, i64::MAX, ScanReader::Direct);
            assert!(matches!(direct, Err(Error::Invalid(_))), "{table}: {direct:?}");
            // (The SQLite path has no rowid to slice a WITHOUT ROWID table by, so both fail there.)
            let auto = read_rows(&file, table, &exprs, &[], i64::MIN, i64::MAX, ScanReader::Auto);
            let sqlite = read_rows(&file, table, &exprs, &[], i64::MIN, i64::MAX, ScanReader::Sqlite);
            assert_eq!(format!("{auto:?}"), format!("{sqlite:?}"), "{table}");
        }
        // An expression other than a column or NULL goes to SQLite too.
        let exprs = vec!["\"a\" + 1".to_string()];
        assert!(matches!(read_rows(&file, "deep", &exprs, &[], 0, 100, ScanReader::Direct), Err(Error::Invalid(_))));
        let auto = read_rows(&file, "deep", &exprs, &[], 0, 3, ScanReader::Auto).unwrap();
        // Rowid 1 (a = 0) was deleted; rowid 2 has a = 7.
        assert_eq!(auto.0[0], vec![8]);
        std::fs::remove_file(&path).unwrap();
        // Read-only connections to the WAL-mode file leave its (empty) -wal and -shm behind.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

/// Run `f` on a thread; fail if it panics or takes longer than `limit`.
fn bounded<T: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("{what}: panicked"),
        Err(_) => panic!("{what}: still running after {limit:?} (endless loop?)"),
    }
}

/// Scan every table of `path` both ways; every outcome must be rows or a corruption error.
fn scan_everything(path: &Path, tables: &[(String, Vec<String>)]) -> (usize, usize) {
    let size = std::fs::metadata(path).unwrap().len();
    // Past ExportFile::open's own checks, so the scans meet the damage themselves.
    let file = ExportFile { path: path.into(), size };
    let (mut ok, mut corrupt) = (0, 0);
    let cancel = AtomicBool::new(false);
    for (table, cols) in tables {
        let exprs = quoted(cols);
        let outcomes = [
            scan_chunks_with(&file, table, &exprs, &exprs, 2, &cancel, ScanReader::Auto, |c, _| c[0].len()).map(|_| ()),
            read_rows(&file, table, &exprs, &exprs, i64::MIN, i64::MAX, ScanReader::Direct).map(|_| ()),
            read_rows(&file, table, &exprs, &[], 100, 5000, ScanReader::Direct).map(|_| ()),
            rowid_bounds_with(&file, table, ScanReader::Direct).map(|_| ()),
        ];
        for o in outcomes {
            match o {
                Ok(()) => ok += 1,
                // Damage SQLite meets while planning (the schema, the header) may read as "not a database",
                // and may leave a table impossible to read directly.
                Err(Error::Corrupt { .. } | Error::NotAnExport { .. } | Error::Invalid(_)) => corrupt += 1,
                Err(e) => panic!("{table}: unexpected error {e:?}"),
            }
        }
    }
    (ok, corrupt)
}

fn corrupt_copies(src: &Path, name: &str, trials: usize, seed: u64) {
    let pristine = std::fs::read(src).unwrap();
    let tables = tables(src);
    let page_size = match u16::from_be_bytes([pristine[16], pristine[17]]) {
        1 => 65536,
        p => p as usize,
    };
    let pages = pristine.len() / page_size;
    let mut rng = Rng(seed);
    let (mut ok, mut corrupt) = (0, 0);
    for trial in 0..trials {
        let mut bytes = pristine.clone();
        for _ in 0..1 + rng.below(8) {
            // Half the hits land in b-tree page headers and cell pointer arrays, where damage steers the walk.
            let pos = if rng.below(2) == 0 {
                (1 + rng.below(pages as u64 - 1) as usize) * page_size + rng.below(40) as usize
            } else {
                100 + rng.below(pristine.len() as u64 - 100) as usize
            };
            bytes[pos] = match rng.below(4) {
                0 => 0,
                1 => 0xFF,
                _ => rng.next() as u8,
            };
        }
        let path = tmp(&format!("{name}_{trial}.sqlite"));
        std::fs::write(&path, &bytes).unwrap();
        let tables = tables.clone();
        let p = path.clone();
        let (o, c) =
            bounded(&format!("{name} trial {trial}"), Duration::from_secs(60), move || scan_everything(&p, &tables));
        ok += o;
        corrupt += c;
        std::fs::remove_file(&path).unwrap();
    }
    eprintln!("{name}: {ok} scans read, {corrupt} reported corruption");
    assert!(corrupt > 0, "the damage was never noticed");
}

#[test]
fn damaged_real_export_never_panics_or_hangs() {
    let src = fixtures().join("small_matmul_h100_nsys2025.3.sqlite");
    if !src.exists() {
        eprintln!("skipping: {} not present", src.display());
        return;
    }
    // TRACEFORGE_CORRUPTION_TRIALS raises the count for a one-off stress run.
    let trials = std::env::var("TRACEFORGE_CORRUPTION_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(300);
    corrupt_copies(&src, "damaged_small_matmul", trials, 0xC0FFEE);

    // Cut short: pages past the end are reported, not read as zeros.
    let bytes = std::fs::read(&src).unwrap();
    for cut in [bytes.len() / 2, bytes.len() / 3 + 1234, 4096 * 3] {
        let path = tmp(&format!("truncated_{cut}.sqlite"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let t = tables(&src);
        let p = path.clone();
        let (_, corrupt) = bounded("truncated", Duration::from_secs(60), move || scan_everything(&p, &t));
        assert!(corrupt > 0, "truncation at {cut} went unnoticed");
        let file = ExportFile { path: path.clone(), size: cut as u64 };
        let exprs = vec!["\"start\"".to_string()];
        let err = read_rows(&file, "CUPTI_ACTIVITY_KIND_RUNTIME", &exprs, &[], i64::MIN, i64::MAX, ScanReader::Direct);
        assert!(matches!(err, Err(Error::Corrupt { .. })), "{err:?}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn damaged_deep_btree_never_panics_or_hangs() {
    let path = tmp("deep_source.sqlite");
    build_corner_cases(&path, 512, 0, false);
    corrupt_copies(&path, "damaged_deep", 150, 7);
    std::fs::remove_file(&path).unwrap();
}
