//! End-to-end tests of the core on small exports built here with nsys' table and column names.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rusqlite::{params, Connection};
use traceforge_core::error::Error;
use traceforge_core::ingest::Trace;
use traceforge_core::options::IngestOptions;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traceforge-core-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

const GPID_A: i64 = (100 << 24) | 100; // pid 100
const GPID_B: i64 = (200 << 24) | 200; // pid 200

/// Two processes whose correlation ids collide, rows inserted out of time order.
fn build_export(path: &Path, schema_major: &str, with_kernels: bool) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE META_DATA_EXPORT (name TEXT NOT NULL, value TEXT);
         CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL, eventClass INTEGER NOT NULL,
             globalTid INTEGER, correlationId INTEGER, nameId INTEGER NOT NULL, returnValue INTEGER NOT NULL, callchainId INTEGER);
         CREATE TABLE CUPTI_ACTIVITY_KIND_MEMCPY (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL,
             contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER,
             bytes INTEGER NOT NULL, copyKind INTEGER NOT NULL);
         CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL, rangeId INTEGER,
             category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, textId INTEGER,
             domainId INTEGER);",
    )
    .unwrap();
    if with_kernels {
        c.execute_batch(
            "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, deviceId INTEGER NOT NULL,
                 contextId INTEGER NOT NULL, streamId INTEGER NOT NULL, correlationId INTEGER, globalPid INTEGER,
                 demangledName INTEGER NOT NULL, shortName INTEGER NOT NULL, gridX INTEGER, gridY INTEGER, gridZ INTEGER,
                 blockX INTEGER, blockY INTEGER, blockZ INTEGER);",
        )
        .unwrap();
    }
    for (id, v) in
        [(1, "gemm_kernel"), (2, "elementwise"), (3, "cudaLaunchKernel"), (4, "cudaMemcpyAsync"), (5, "request")]
    {
        c.execute("INSERT INTO StringIds VALUES (?1, ?2)", params![id, v]).unwrap();
    }
    c.execute("INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION_MAJOR', ?1)", params![schema_major])
        .unwrap();
    c.execute(
        "INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION', ?1)",
        params![format!("{schema_major}.20.3")],
    )
    .unwrap();
    c.execute("INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_VERSION', '2025.3.2.0')", []).unwrap();
    let tid_a = GPID_A + 1; // thread 101 of pid 100
    let tid_b = GPID_B + 1;
    // Runtime calls: both processes use correlation ids 1 and 2.
    for (start, gtid, corr, name) in [(50, tid_b, 1, 3), (10, tid_a, 1, 3), (20, tid_a, 2, 4), (60, tid_b, 2, 3)] {
        c.execute(
            "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?1, ?2, 1, ?3, ?4, ?5, 0, NULL)",
            params![start, start + 5, gtid, corr, name],
        )
        .unwrap();
    }
    if with_kernels {
        // (start, end, device, stream, corr, gpid, name); unsorted; B's corr 2 launches two kernels (a graph).
        for k in [
            (300i64, 400i64, 0i64, 7i64, 2i64, GPID_B, 2i64),
            (100, 200, 0, 7, 1, GPID_A, 1),
            (150, 250, 0, 8, 1, GPID_B, 1),
            (400, 420, 0, 7, 2, GPID_B, 2),
            (500, 500, 1, 7, 99, GPID_A, 2), // zero-length, device 1, no API call
        ] {
            c.execute(
                "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?7, 1, 1, 1, 128, 1, 1)",
                params![k.0, k.1, k.2, k.3, k.4, k.5, k.6],
            )
            .unwrap();
        }
    }
    c.execute("INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY VALUES (30, 130, 0, 1, 9, 2, ?1, 1000, 1)", params![GPID_A])
        .unwrap();
    // One request range on thread A covering both of A's launches.
    c.execute(
        "INSERT INTO NVTX_EVENTS (start, end, eventType, globalTid, textId) VALUES (0, 40, 59, ?1, 5)",
        params![tid_a],
    )
    .unwrap();
}

fn open(path: &Path) -> Result<Arc<Trace>, Error> {
    Trace::open(path, &IngestOptions::default().with_threads(2), Arc::new(AtomicBool::new(false)))
}

#[test]
fn metrics_and_launches_of_a_two_process_export() {
    let p = tmp("two_process.sqlite");
    build_export(&p, "3", true);
    let t = open(&p).unwrap();
    let f = t.finish().unwrap();
    let dev0 = f.derived.device_metrics.iter().find(|r| r.device == 0).unwrap();
    // Kernels on device 0: [100,200) [150,250) [300,400) [400,420).
    assert_eq!(dev0.kernel_count, 4);
    assert_eq!(dev0.kernel_time_ns, 100 + 100 + 100 + 20);
    assert_eq!(dev0.span_ns, Some(320));
    assert_eq!(dev0.busy_ns, 150 + 120);
    assert_eq!(dev0.max_concurrency, 2);
    assert_eq!(dev0.overlap_ns, 50);
    assert_eq!((dev0.gap_count, dev0.gap_total_ns, dev0.gap_max_ns), (1, 50, Some(50)));
    assert_eq!((dev0.memcpy_count, dev0.memcpy_bytes, dev0.memcpy_ns), (1, 1000, 100));
    // Latencies: A corr1 100-10=90; B corr1 150-50=100; B corr2 300-60=240 and 400-60=340.
    assert_eq!(dev0.launch_matched, 4);
    assert_eq!(dev0.launch_latency_p50_ns, Some(170.0));
    let dev1 = f.derived.device_metrics.iter().find(|r| r.device == 1).unwrap();
    assert_eq!((dev1.kernel_count, dev1.busy_ns, dev1.max_concurrency, dev1.launch_matched), (1, 0, 0, 0));
    // The request range on A's thread projects A's kernel and memcpy, not B's work with the same ids.
    let pr = &f.derived.projection[0];
    assert_eq!((pr.launch_count, pr.gpu_op_count, pr.kernel_count), (2, 2, 1));
    assert_eq!((pr.gpu_start_ns, pr.gpu_end_ns), (Some(30), Some(200)));
    assert_eq!(t.counts().kernels, 5);
}

#[test]
fn api_stream_emits_every_runtime_row() {
    let p = tmp("stream.sqlite");
    build_export(&p, "3", true);
    let t = open(&p).unwrap();
    let rows: usize = t.table("api_call_rows").unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 4);
    assert_eq!(t.counts().api_calls, 4);
    let kernels: usize = t.table("kernel_rows").unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(kernels, 5);
    // The API tables stream once.
    assert_eq!(t.table("api_call_rows").err().map(|e| e.code()), Some("invalid"));
}

/// Every table's rows, by name, read through `tables()` or through the one-table-at-a-time calls.
fn rows_by_table(t: &Arc<Trace>, all_at_once: bool) -> Vec<(String, Vec<arrow_array::RecordBatch>)> {
    let read = |s: traceforge_core::columnar::BatchStream| s.map(|b| b.unwrap()).collect::<Vec<_>>();
    if all_at_once {
        t.tables().map(|item| item.unwrap()).map(|(name, s)| (name.to_string(), read(s))).collect()
    } else {
        let mut out = vec![("api_call_rows".to_string(), read(t.table("api_call_rows").unwrap()))];
        t.finish().unwrap();
        for &name in Trace::tables_after_api_calls() {
            out.push((name.to_string(), read(t.table(name).unwrap())));
        }
        out
    }
}

#[test]
fn tables_yields_every_table_in_write_order_with_the_rows_of_the_old_protocol() {
    let p = tmp("tables.sqlite");
    build_export(&p, "3", true);
    let via_tables = rows_by_table(&open(&p).unwrap(), true);
    let names: Vec<&str> = via_tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, Trace::WRITE_ORDER.to_vec());
    assert_eq!(names[0], "api_call_rows");
    // The tables written while the metrics are derived in the background come right after the API calls.
    assert_eq!(names[1..=Trace::NEEDS_NO_METRICS.len()], Trace::NEEDS_NO_METRICS);
    // The dictionaries follow the streams that build them.
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(at("kernel_classes") > at("kernel_rows") && at("api_call_classes") > at("api_call_rows"));
    assert_eq!(via_tables, rows_by_table(&open(&p).unwrap(), false));
    let rows = |n: &str| via_tables[at(n)].1.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!((rows("api_call_rows"), rows("kernel_rows"), rows("memops")), (4, 5, 1));
}

#[test]
fn tables_stops_after_an_error() {
    let p = tmp("tables_error.sqlite");
    build_export(&p, "3", true);
    let t = open(&p).unwrap();
    // The API tables were streamed already: the first pair is an error, then nothing.
    let _ = t.table("api_call_rows").unwrap().count();
    let mut tables = t.tables();
    assert!(tables.next().unwrap().is_err());
    assert!(tables.next().is_none());
}

#[test]
fn bad_inputs_get_typed_errors() {
    assert!(matches!(open(Path::new("/nonexistent/x.sqlite")), Err(Error::NotFound { .. })));
    let text = tmp("not_sqlite.sqlite");
    std::fs::write(
        &text,
        "hello, not a database at all, just text padding ......................................................",
    )
    .unwrap();
    assert!(matches!(open(&text), Err(Error::NotAnExport { .. })));
    let dir = std::env::temp_dir();
    assert!(matches!(open(&dir), Err(Error::NotAnExport { .. })));

    let good = tmp("to_truncate.sqlite");
    build_export(&good, "3", true);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = tmp("truncated.sqlite");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(open(&truncated), Err(Error::Corrupt { .. })));

    let no_kernels = tmp("no_kernels.sqlite");
    build_export(&no_kernels, "3", false);
    let err = open(&no_kernels).err().expect("must fail");
    assert_eq!(err.code(), "missing_table");
    assert!(err.to_string().contains("no_kernels.sqlite"));

    let future = tmp("future.sqlite");
    build_export(&future, "9", true);
    assert!(matches!(open(&future), Err(Error::UnsupportedSchema { .. })));

    let foreign = tmp("foreign.sqlite");
    Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);").unwrap();
    assert!(matches!(open(&foreign), Err(Error::NotAnExport { .. })));
}

#[test]
fn real_fixture_when_available() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/small_matmul_h100_nsys2025.3.sqlite");
    if !p.exists() {
        eprintln!("skipping: {} not present", p.display());
        return;
    }
    let t = open(&p).unwrap();
    let f = t.finish().unwrap();
    let d = &f.derived.device_metrics[0];
    assert_eq!(d.kernel_count, 42);
    assert_eq!(d.stream_count, 2);
    assert_eq!(d.launch_matched, 42);
    assert!(d.busy_ns <= d.kernel_time_ns && d.busy_ns <= d.span_ns.unwrap());
    assert_eq!(f.derived.projection.len(), 1);
}

/// `build_export` plus GPU metrics: 3 metrics on GPU 0 (typeId 0x1_0001_0000_0000) sampled at the same
/// instants, one of them also on GPU 1, a metric with no name row, negative timestamps, over several rowid
/// chunks (70,000 instants).
fn build_metrics_export(path: &Path) {
    build_export(path, "3", true);
    let mut c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE GPU_METRICS (rawTimestamp INTEGER, timestamp INTEGER, typeId INTEGER NOT NULL,
             metricId INTEGER NOT NULL, value INTEGER NOT NULL);
         CREATE TABLE TARGET_INFO_GPU_METRICS (typeId INTEGER NOT NULL, sourceId INTEGER NOT NULL,
             typeName TEXT NOT NULL, metricId INTEGER NOT NULL, metricName TEXT NOT NULL);",
    )
    .unwrap();
    let gpu0: i64 = 0x1_0001_0000_0000;
    for (ty, id, name) in [(gpu0, 0, "SMs Active"), (gpu0, 1, "DRAM Read"), (gpu0 | 1, 0, "SMs Active")] {
        c.execute("INSERT INTO TARGET_INFO_GPU_METRICS VALUES (?1, 0, 'GPU', ?2, ?3)", params![ty, id, name]).unwrap();
    }
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO GPU_METRICS VALUES (?1, ?1, ?2, ?3, ?4)").unwrap();
        for i in 0..70_000i64 {
            let ts = i * 10 - 30;
            for (ty, id) in [(gpu0, 0), (gpu0, 1), (gpu0, 7), (gpu0 | 1, 0)] {
                ins.execute(params![ts, ty, id, (i * 7 + id) % 101 - 5]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

#[test]
fn gpu_metrics_read_the_same_through_either_reader_and_chunk_order() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    let path = tmp("metrics.sqlite");
    build_metrics_export(&path);
    let mut seen = Vec::new();
    for force_sqlite_scan in [false, true] {
        let options = IngestOptions { force_sqlite_scan, ..IngestOptions::default() }.with_threads(2);
        let t = Trace::open(&path, &options, Arc::new(AtomicBool::new(false))).unwrap();
        let f = t.finish().unwrap();
        let g = &f.gpu_metrics;
        let mut names: Vec<Option<String>> = g.names.clone();
        names.sort();
        assert_eq!(names, vec![None, Some("DRAM Read".into()), Some("SMs Active".into())]);
        assert_eq!(g.summary.len(), 4); // (0, SMs Active), (0, DRAM Read), (0, None), (1, SMs Active)
        assert!(g.summary.iter().all(|s| s.sample_count == 70_000 && s.min == Some(-5) && s.max == Some(95)));
        let mut rows: Vec<(i32, Option<String>, i64, i64)> = Vec::new();
        for b in t.table("gpu_metric_rows").unwrap() {
            let b = b.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (d, m) = (col("device_id"), col("metric_class"));
            let (ts, v) = (col("ts_ns"), col("value"));
            for i in 0..b.num_rows() {
                let metric = g.names[m.as_primitive::<Int32Type>().value(i) as usize].clone();
                rows.push((
                    d.as_primitive::<Int32Type>().value(i),
                    metric,
                    ts.as_primitive::<Int64Type>().value(i),
                    v.as_primitive::<Int64Type>().value(i),
                ));
            }
        }
        assert_eq!(rows.len(), 280_000);
        assert_eq!(rows.iter().map(|r| r.2).min(), Some(-30)); // negative timestamps kept
                                                               // Each series comes out in time order.
        assert!(rows.windows(2).all(|w| (w[0].0, &w[0].1) != (w[1].0, &w[1].1) || w[0].2 < w[1].2));
        let summary = t.table("gpu_metric_summary").unwrap().next().unwrap().unwrap();
        let means = summary.column_by_name("mean").unwrap().as_primitive::<Float64Type>().values().to_vec();
        seen.push((rows, means));
    }
    assert_eq!(seen[0], seen[1], "the direct reader and SQLite agree");
}
