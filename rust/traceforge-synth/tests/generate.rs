//! End-to-end checks of the generator through its public API (plain rusqlite reads of the output).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use traceforge_synth::{synthesize, validate, SynthConfig, SynthError};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn count(con: &rusqlite::Connection, table: &str) -> u64 {
    con.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

#[test]
fn summary_matches_the_rows_and_the_schema_is_the_embedded_one() {
    let dir = scratch("summary");
    let out = dir.join("t.sqlite");
    let cfg = SynthConfig { kernels: 5_000, devices: 3, streams: 2, seed: 9, requests: Some(2), ..Default::default() };
    let s = synthesize(&out, &cfg, &AtomicBool::new(false)).unwrap();
    let con = rusqlite::Connection::open(&out).unwrap();
    assert_eq!(s.kernels, 5_000);
    assert_eq!(count(&con, "CUPTI_ACTIVITY_KIND_KERNEL"), s.kernels);
    assert_eq!(count(&con, "CUPTI_ACTIVITY_KIND_MEMCPY"), s.memcpys);
    assert_eq!(count(&con, "CUPTI_ACTIVITY_KIND_MEMSET"), s.memsets);
    assert_eq!(count(&con, "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"), s.syncs);
    assert_eq!(count(&con, "CUPTI_ACTIVITY_KIND_RUNTIME"), s.api_calls);
    assert_eq!(count(&con, "NVTX_EVENTS"), 6);
    assert_eq!(count(&con, "TARGET_INFO_GPU"), 3);
    let sqls: Vec<String> = con
        .prepare("SELECT sql FROM sqlite_master ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let embedded: String = sqls.iter().map(|s| format!("{s};\n")).collect();
    assert!(traceforge_synth::SCHEMA_2025_3.ends_with(&embedded));
    // kernels per device differ by at most one
    let per_device: Vec<i64> = con
        .prepare("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL GROUP BY deviceId ORDER BY deviceId")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(per_device, vec![1667, 1667, 1666]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cancel_leaves_nothing_and_bad_arguments_are_rejected() {
    let dir = scratch("cancel");
    let out = dir.join("c.sqlite");
    let cfg = SynthConfig { kernels: 100_000, ..Default::default() };
    let err = synthesize(&out, &cfg, &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(err, SynthError::Cancelled));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    for (cfg, field) in [
        (SynthConfig { kernels: 0, ..Default::default() }, "kernels"),
        (SynthConfig { kernels: 2, devices: 3, ..Default::default() }, "kernels"),
        (SynthConfig { devices: 0, ..Default::default() }, "devices"),
        (SynthConfig { streams: 0, ..Default::default() }, "streams"),
        (SynthConfig { kernels: 10, requests: Some(11), ..Default::default() }, "requests"),
    ] {
        match validate(&cfg) {
            Err(SynthError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{cfg:?}: {other:?}"),
        }
    }
    std::fs::write(&out, b"keep").unwrap();
    let err = synthesize(&out, &SynthConfig::default(), &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, SynthError::Exists { .. }));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let err = synthesize(&dir.join("missing/x.sqlite"), &SynthConfig::default(), &AtomicBool::new(false)).unwrap_err();
    assert_eq!(err.code(), "synth_output");
    let _ = std::fs::remove_dir_all(&dir);
}
