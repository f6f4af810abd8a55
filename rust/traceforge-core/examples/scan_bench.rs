//! Full-table scan throughput, direct b-tree reader against SQLite's VM.
//!
//! `cargo run --release -p traceforge-core --example scan_bench -- EXPORT.sqlite [REPEATS]`
//!
//! Scans the kernel table (all `KERNEL_COLUMNS`) and the runtime table (`ApiChunk::COLUMNS`) with 1 and 2
//! threads each way, after one untimed pass so both readers find the file in the page cache; prints the
//! best of REPEATS (default 3) runs and checks that both readers saw the same values.
//! `SCAN_BENCH_ONLY=direct` or `=sqlite` runs one reader alone (for profiling).
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use traceforge_core::export::events::{self, ApiChunk};
use traceforge_core::export::probe::{KERNEL_TABLE, RUNTIME_TABLE};
use traceforge_core::export::scan::{scan_chunks_with, ScanReader};
use traceforge_core::export::{Capabilities, ExportFile};

/// Rows and a checksum of every value, so each reader is seen to deliver the same data.
fn scan(file: &ExportFile, table: &str, exprs: &[String], threads: usize, reader: ScanReader) -> (usize, u64, f64) {
    let cancel = AtomicBool::new(false);
    let t0 = Instant::now();
    let parts = scan_chunks_with(file, table, exprs, &[], threads, &cancel, reader, |cols, _| {
        let rows = cols.first().map_or(0, Vec::len);
        let sum = cols.iter().flatten().fold(0u64, |acc, &v| acc.rotate_left(5) ^ v as u64);
        (rows, sum)
    })
    .unwrap_or_else(|e| panic!("{table} with {reader:?}: {e}"));
    let secs = t0.elapsed().as_secs_f64();
    let rows = parts.iter().map(|p| p.0).sum();
    let sum = parts.iter().fold(0u64, |acc, p| acc.rotate_left(7) ^ p.1);
    (rows, sum, secs)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: scan_bench EXPORT.sqlite [REPEATS]"));
    let repeats: usize = args.next().map_or(3, |r| r.parse().expect("REPEATS is a number"));
    let file = ExportFile::open(&path).unwrap();
    let conn = file.connect().unwrap();
    let caps = Capabilities::probe(&file, &conn).unwrap();
    drop(conn);
    let runtime: Vec<String> = ApiChunk::COLUMNS.iter().map(|c| caps.column_or_null(RUNTIME_TABLE, c)).collect();
    let cases = [(KERNEL_TABLE, events::kernel_exprs(&file, &caps).unwrap()), (RUNTIME_TABLE, runtime)];

    println!("{}", path.display());
    println!(
        "{:<28} {:>5} {:>8} {:>9} {:>9} {:>12} {:>8} {:>8}",
        "table", "cols", "reader", "threads", "rows", "rows/s", "s", "speedup"
    );
    for (table, exprs) in &cases {
        for threads in [1usize, 2] {
            let mut reference = None;
            let mut sqlite_secs = f64::NAN;
            for reader in [ScanReader::Sqlite, ScanReader::Direct] {
                // SCAN_BENCH_ONLY=direct (or sqlite) times one reader alone, e.g. under a profiler.
                let only = std::env::var("SCAN_BENCH_ONLY").unwrap_or_default();
                if !only.is_empty() && !format!("{reader:?}").eq_ignore_ascii_case(&only) {
                    continue;
                }
                scan(&file, table, exprs, threads, reader);
                let mut best = f64::INFINITY;
                let mut seen = (0, 0);
                for _ in 0..repeats {
                    let (rows, sum, secs) = scan(&file, table, exprs, threads, reader);
                    best = best.min(secs);
                    seen = (rows, sum);
                }
                match reference {
                    None => reference = Some(seen),
                    Some(r) => assert_eq!(r, seen, "{table}: the readers disagree"),
                }
                if reader == ScanReader::Sqlite {
                    sqlite_secs = best;
                }
                println!(
                    "{:<28} {:>5} {:>8} {:>9} {:>9} {:>12.0} {:>8.3} {:>7.1}x",
                    table,
                    exprs.len(),
                    format!("{reader:?}").to_lowercase(),
                    threads,
                    seen.0,
                    seen.0 as f64 / best,
                    best,
                    sqlite_secs / best
                );
            }
        }
    }
}
