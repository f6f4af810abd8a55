//! The nsys 2022.4 variant: its schema against the real 2022.4 GPU export, its launches and metadata.
//!
//! The real export is `tests/data/cu11_driverapi_h200_nsys2022.4.sqlite.xz`. Set
//! `TRACEFORGE_NSYS2022_4_EXPORT` to a decompressed copy, or have `xz` on PATH and the test decompresses it
//! (without either the test fails, or is skipped with `TRACEFORGE_ALLOW_SKIPS=1`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rusqlite::Connection;
use traceforge_synth::{synthesize, SchemaVariant, SynthConfig, SynthSummary, SCHEMA_2022_4};

const REAL: &str = "cu11_driverapi_h200_nsys2022.4.sqlite";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-synth-2022-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn generate(dir: &Path, cfg: SynthConfig) -> (PathBuf, SynthSummary) {
    let out = dir.join("synth2022.sqlite");
    let s =
        synthesize(&out, &SynthConfig { schema: SchemaVariant::Nsys2022_4, ..cfg }, &AtomicBool::new(false)).unwrap();
    (out, s)
}

/// The real export, decompressed; None (test skipped, with a note) when neither the env var nor `xz` helps.
fn real_export(dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TRACEFORGE_NSYS2022_4_EXPORT") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TRACEFORGE_NSYS2022_4_EXPORT={} is not a file", p.display());
        return Some(p);
    }
    let xz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(format!("{REAL}.xz"));
    let out = dir.join(REAL);
    let decompressed = std::process::Command::new("xz")
        .arg("-dc")
        .arg(&xz)
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map(|o| std::fs::write(&out, o.stdout).unwrap());
    if decompressed.is_none() {
        // As in the Python suite: a missing tool is an error unless skips are allowed for a local run.
        let why = format!(
            "set TRACEFORGE_NSYS2022_4_EXPORT or install xz (apt-get install xz-utils) to read {}",
            xz.display()
        );
        assert!(std::env::var("TRACEFORGE_ALLOW_SKIPS").as_deref() == Ok("1"), "{why}");
        eprintln!("skipped (TRACEFORGE_ALLOW_SKIPS=1): {why}");
        return None;
    }
    Some(out)
}

type Columns = Vec<(String, String, bool, i64)>;

/// Tables in `sqlite_master` order with their `CREATE` text and (name, type, notnull, pk) columns.
fn schema(path: &Path) -> Vec<(String, String, Columns)> {
    let con = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<(String, String, String)> = con
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|(kind, name, sql)| {
            assert_eq!(kind, "table", "{}: {name} is a {kind}", path.display());
            let cols = con
                .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid")
                .unwrap()
                .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (name, sql, cols)
        })
        .collect()
}

fn rows(con: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut st = con.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get(i)).collect()).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn schema_equals_the_real_2022_4_export() {
    let dir = scratch("schema");
    let (out, _) =
        generate(&dir, SynthConfig { kernels: 3_000, devices: 2, streams: 3, seed: 4, ..Default::default() });
    let Some(real) = real_export(&dir) else { return };
    let (ours, theirs) = (schema(&out), schema(&real));
    let names = |s: &[(String, String, Columns)]| s.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs), "tables or their order differ");
    for ((name, sql, cols), (_, real_sql, real_cols)) in ours.iter().zip(&theirs) {
        assert_eq!(cols, real_cols, "{name}: columns, declared types, NOT NULL or keys differ");
        assert_eq!(sql, real_sql, "{name}: CREATE TABLE text differs");
    }
    // The static rows are the export's: every enum table, the GPU row's static fields, the system info.
    let con = Connection::open(&out).unwrap();
    con.execute("ATTACH ?1 AS real", [real.to_str().unwrap()]).unwrap();
    for (name, _, _) in ours.iter().filter(|t| t.0.starts_with("ENUM_")) {
        let ours = rows(&con, &format!("SELECT * FROM main.{name} ORDER BY rowid"));
        assert_eq!(ours, rows(&con, &format!("SELECT * FROM real.{name} ORDER BY rowid")), "{name}");
    }
    let gpu = "SELECT name, chipName, smCount, totalMemory, clockRate, computeMajor FROM {} ORDER BY id";
    let real_gpu = rows(&con, &gpu.replace("{}", "real.TARGET_INFO_GPU"));
    assert_eq!(rows(&con, &gpu.replace("{}", "main.TARGET_INFO_GPU")), [real_gpu[0].clone(), real_gpu[0].clone()]);
    let env = "SELECT name, nameEnum, typeof(value) FROM {} WHERE name != 'DeviceEnvironment' ORDER BY rowid";
    assert_eq!(
        rows(&con, &env.replace("{}", "main.TARGET_INFO_SYSTEM_ENV")),
        rows(&con, &env.replace("{}", "real.TARGET_INFO_SYSTEM_ENV"))
    );
    // EXPORT_META_DATA: the real export's keys in its order; the version keys are the ones probes read.
    let keys = |db: &str| rows(&con, &format!("SELECT name FROM {db}.EXPORT_META_DATA ORDER BY rowid"));
    assert_eq!(keys("main"), keys("real"));
    let version = "SELECT name, value FROM {}.EXPORT_META_DATA WHERE name LIKE 'EXPORT_SCHEMA_VERSION%' \
                   OR name LIKE 'EXPORT_PRODUCT_%' ORDER BY rowid";
    assert_eq!(rows(&con, &version.replace("{}", "main")), rows(&con, &version.replace("{}", "real")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embedded_schema_and_driver_api_launches() {
    let dir = scratch("launch");
    let (out, s) =
        generate(&dir, SynthConfig { kernels: 4_000, devices: 2, streams: 2, seed: 1, ..Default::default() });
    let con = Connection::open(&out).unwrap();
    let sqls: String = con
        .prepare("SELECT sql FROM sqlite_master ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|s| format!("{};\n", s.unwrap()))
        .collect();
    assert!(SCHEMA_2022_4.ends_with(&sqls), "sqlite_master is the embedded 2022.4 schema");
    for absent in ["META_DATA_EXPORT", "META_DATA_CAPTURE", "TARGET_INFO_CUDA_DEVICE", "TARGET_INFO_CUDA_CONTEXT_INFO"]
    {
        assert!(!sqls.contains(&format!("CREATE TABLE {absent} ")), "{absent} is a 2023+ table");
    }
    let count = |sql: &str| con.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") as u64, s.kernels);
    assert_eq!(count("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME") as u64, s.api_calls);
    assert_eq!(count("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_SYNCHRONIZATION") as u64, s.syncs);
    assert_eq!(count("SELECT count(*) FROM TARGET_INFO_CUDA_NULL_STREAM"), 2);
    // every kernel's launching call is a driver-API cuLaunchKernel with its correlation id; no prelude calls
    let launches = rows(
        &con,
        "SELECT s.value, r.eventClass, count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL k \
         JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId \
         AND r.globalTid >> 24 = k.globalPid >> 24 JOIN StringIds s ON s.id = r.nameId GROUP BY 1, 2",
    );
    use rusqlite::types::Value::{Integer, Text};
    assert_eq!(launches, vec![vec![Text("cuLaunchKernel".into()), Integer(1), Integer(s.kernels as i64)]]);
    assert_eq!(count("SELECT count(*) FROM StringIds WHERE value LIKE 'cuKernelGet%'"), 0);
    assert_eq!(s.api_calls, s.kernels + s.memcpys + s.memsets + s.syncs, "one call per operation");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn variants_parse_and_2025_3_stays_the_default() {
    assert_eq!(SynthConfig::default().schema, SchemaVariant::Nsys2025_3);
    assert_eq!(SchemaVariant::parse("2022.4").unwrap(), SchemaVariant::Nsys2022_4);
    assert_eq!(SchemaVariant::parse("2022.4.2.1").unwrap(), SchemaVariant::Nsys2022_4);
    assert_eq!(SchemaVariant::parse("2025.3").unwrap(), SchemaVariant::Nsys2025_3);
    for bad in ["2022", "2023.1", "2022.45", ""] {
        let err = SchemaVariant::parse(bad).unwrap_err();
        assert_eq!(err.code(), "synth_argument", "{bad:?}");
    }
    assert_eq!(SchemaVariant::Nsys2022_4.schema_version(), "3.0.0");
}
