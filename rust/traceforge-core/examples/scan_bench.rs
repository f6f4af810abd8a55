//! Full-table scan throughput, direct b-tree reader against SQLite's VM.
//!
//! `cargo run --release -p traceforge-core --example scan_bench -- EXPORT.sqlite [REPEATS]`
//!
//! Scans the kernel table (all `KERNEL_COLUMNS`) and the runtime table (`ApiChunk::COLUMNS`) with 1 and 2
//! threads each way and prints the best of REPEATS (default 3) runs, checking that both readers saw the same
//! values. Each case runs in a fresh process after one untimed pass: the column vectors a scan returns are
//! most of its allocations, and glibc serves them differently (fresh mmap pages or reused heap) depending
//! on what ran before in the same process, which would otherwise favour whichever reader came second.
//! `SCAN_BENCH_CASE=TABLE:READER:THREADS` runs one case in this process (for profiling).
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use traceforge_core::export::events::{self, ApiChunk};
use traceforge_core::export::probe::{KERNEL_TABLE, RUNTIME_TABLE};
use traceforge_core::export::scan::{scan_chunks_with, ScanReader};
use traceforge_core::export::{Capabilities, ExportFile};

const CASE_ENV: &str = "SCAN_BENCH_CASE";

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

fn exprs_of(path: &Path, table: &str) -> (ExportFile, Vec<String>) {
    let file = ExportFile::open(path).unwrap();
    let conn = file.connect().unwrap();
    let caps = Capabilities::probe(&file, &conn).unwrap();
    let exprs = if table == KERNEL_TABLE {
        events::kernel_exprs(&file, &caps).unwrap()
    } else {
        ApiChunk::COLUMNS.iter().map(|c| caps.column_or_null(table, c)).collect()
    };
    (file, exprs)
}

/// Run one case here: prints `rows checksum best_seconds`.
fn run_case(path: &Path, case: &str, repeats: usize) {
    let mut parts = case.split(':');
    let (Some(table), Some(reader), Some(threads)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CASE_ENV} is TABLE:READER:THREADS");
    };
    let reader = if reader == "direct" { ScanReader::Direct } else { ScanReader::Sqlite };
    let threads: usize = threads.parse().expect("THREADS is a number");
    let (file, exprs) = exprs_of(path, table);
    scan(&file, table, &exprs, threads, reader);
    let mut best = (0, 0, f64::INFINITY);
    for _ in 0..repeats {
        let r = scan(&file, table, &exprs, threads, reader);
        if r.2 < best.2 {
            best = r;
        }
    }
    println!("{} {} {} {}", best.0, best.1, best.2, exprs.len());
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: scan_bench EXPORT.sqlite [REPEATS]"));
    let repeats: usize = args.next().map_or(3, |r| r.parse().expect("REPEATS is a number"));
    if let Ok(case) = std::env::var(CASE_ENV) {
        run_case(&path, &case, repeats);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    println!("{}", path.display());
    println!(
        "{:<28} {:>5} {:>8} {:>8} {:>9} {:>12} {:>8} {:>8}",
        "table", "cols", "reader", "threads", "rows", "rows/s", "s", "speedup"
    );
    for table in [KERNEL_TABLE, RUNTIME_TABLE] {
        for threads in [1usize, 2] {
            let mut sqlite: Option<(usize, u64, f64)> = None;
            for reader in ["sqlite", "direct"] {
                let out = std::process::Command::new(&exe)
                    .arg(&path)
                    .arg(repeats.to_string())
                    .env(CASE_ENV, format!("{table}:{reader}:{threads}"))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let line = String::from_utf8_lossy(&out.stdout);
                let f: Vec<&str> = line.split_whitespace().collect();
                let (rows, sum, secs, cols): (usize, u64, f64, usize) =
                    (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap());
                let speedup = match sqlite {
                    None => {
                        sqlite = Some((rows, sum, secs));
                        1.0
                    }
                    Some((r, s, t)) => {
                        assert_eq!((r, s), (rows, sum), "{table}: the readers disagree");
                        t / secs
                    }
                };
                println!(
                    "{:<28} {:>5} {:>8} {:>8} {:>9} {:>12.0} {:>8.3} {:>7.1}x",
                    table,
                    cols,
                    reader,
                    threads,
                    rows,
                    rows as f64 / secs,
                    secs,
                    speedup
                );
            }
        }
    }
}
