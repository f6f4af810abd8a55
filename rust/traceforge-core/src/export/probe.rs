//! The capabilities probe: which tables and columns this export has, and which nsys wrote it.
//!
//! Every reader asks the probe instead of failing deep inside a query: a capture without memcpy has no
//! memcpy table, and columns appear over nsys releases. Version detection lives here and nowhere else.
use std::collections::BTreeMap;

use rusqlite::Connection;

use super::open::ExportFile;
use crate::error::{Error, Result};

// The event tables traceforge reads.
/// CUDA kernels.
pub const KERNEL_TABLE: &str = "CUPTI_ACTIVITY_KIND_KERNEL";
/// Memory copies.
pub const MEMCPY_TABLE: &str = "CUPTI_ACTIVITY_KIND_MEMCPY";
/// Memory sets.
pub const MEMSET_TABLE: &str = "CUPTI_ACTIVITY_KIND_MEMSET";
/// CUDA runtime API calls.
pub const RUNTIME_TABLE: &str = "CUPTI_ACTIVITY_KIND_RUNTIME";
/// CUDA driver API calls.
pub const DRIVER_TABLE: &str = "CUPTI_ACTIVITY_KIND_DRIVER";
/// Synchronization events.
pub const SYNC_TABLE: &str = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION";
/// NVTX ranges, marks and domains.
pub const NVTX_TABLE: &str = "NVTX_EVENTS";
/// OS runtime calls (`-t osrt`).
pub const OSRT_TABLE: &str = "OSRT_API";
/// Whole-graph executions (`--cuda-graph-trace=graph`; absent from older exports and node-mode captures).
pub const GRAPH_TRACE_TABLE: &str = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE";
/// CUDA graph node creations and clones (`graphNodeId`, `originalGraphNodeId`).
pub const GRAPH_NODE_EVENTS_TABLE: &str = "CUDA_GRAPH_NODE_EVENTS";
/// GPU metric samples (`--gpu-metrics-devices`): `typeId`, `metricId`, `timestamp`, `value`.
pub const GPU_METRICS_TABLE: &str = "GPU_METRICS";
/// GPU metric names per (`typeId`, `metricId`).
pub const GPU_METRICS_NAMES_TABLE: &str = "TARGET_INFO_GPU_METRICS";
/// Capture settings (`name`, `value`), e.g. `PROCESS_0:CUDA_GRAPH_TRACE_OPTIONS:MODE`.
pub const CAPTURE_META_TABLE: &str = "META_DATA_CAPTURE";

/// Highest export schema major version this build understands.
pub const MAX_SCHEMA_MAJOR: u32 = 3;

/// Tables and columns present in one export, plus its version metadata.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// table name -> column names in declaration order.
    pub tables: BTreeMap<String, Vec<String>>,
    /// Metadata from `META_DATA_EXPORT` (2023+) or `EXPORT_META_DATA` (2022.x).
    pub metadata: BTreeMap<String, String>,
}

impl Capabilities {
    /// Probe `conn`; fails with a clear error on a database that is not an nsys export.
    pub fn probe(file: &ExportFile, conn: &Connection) -> Result<Self> {
        let mut caps = Capabilities::default();
        let mut stmt =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").map_err(|e| file.sqlite_error(e))?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| file.sqlite_error(e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| file.sqlite_error(e))?;
        for name in names {
            let mut cols_stmt = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{}')", name.replace('\'', "''")))
                .map_err(|e| file.sqlite_error(e))?;
            let cols: Vec<String> = cols_stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| file.sqlite_error(e))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| file.sqlite_error(e))?;
            caps.tables.insert(name, cols);
        }
        if caps.tables.is_empty() {
            return Err(Error::NotAnExport {
                path: file.path.clone(),
                reason: "SQLite database has no tables: not an nsys export".into(),
            });
        }
        let looks_like_nsys = caps.has_table("StringIds")
            || caps.has_table("META_DATA_EXPORT")
            || caps.has_table("EXPORT_META_DATA")
            || caps.has_table("TARGET_INFO_SESSION_START_TIME");
        if !looks_like_nsys {
            return Err(Error::NotAnExport {
                path: file.path.clone(),
                reason: "SQLite database is not an nsys export (no StringIds or export metadata tables)".into(),
            });
        }
        for meta_table in ["META_DATA_EXPORT", "EXPORT_META_DATA"] {
            if caps.has_table(meta_table) && caps.has_column(meta_table, "name") && caps.has_column(meta_table, "value")
            {
                let mut stmt = conn
                    .prepare(&format!("SELECT name, CAST(value AS TEXT) FROM {meta_table}"))
                    .map_err(|e| file.sqlite_error(e))?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
                    .map_err(|e| file.sqlite_error(e))?;
                for row in rows {
                    let (k, v) = row.map_err(|e| file.sqlite_error(e))?;
                    caps.metadata.entry(k).or_insert(v.unwrap_or_default());
                }
            }
        }
        caps.check_schema_version(file)?;
        Ok(caps)
    }

    fn check_schema_version(&self, file: &ExportFile) -> Result<()> {
        let major = self
            .metadata
            .get("EXPORT_SCHEMA_VERSION_MAJOR")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .or_else(|| self.schema_version().and_then(|v| v.split('.').next()?.trim().parse::<u32>().ok()));
        if let Some(major) = major {
            if major > MAX_SCHEMA_MAJOR {
                return Err(Error::UnsupportedSchema {
                    path: file.path.clone(),
                    reason: format!(
                        "export schema version {} (nsys {}) is newer than this traceforge understands (schema {}.x); upgrade traceforge",
                        self.schema_version().unwrap_or("?"),
                        self.nsys_version().unwrap_or("unknown"),
                        MAX_SCHEMA_MAJOR
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether the export has `table`.
    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    /// Whether `table` has `column`.
    pub fn has_column(&self, table: &str, column: &str) -> bool {
        self.tables.get(table).is_some_and(|cols| cols.iter().any(|c| c == column))
    }

    /// `EXPORT_PRODUCT_VERSION`, e.g. `2025.3.2.0`.
    pub fn nsys_version(&self) -> Option<&str> {
        self.metadata.get("EXPORT_PRODUCT_VERSION").map(String::as_str)
    }

    /// `EXPORT_SCHEMA_VERSION`, e.g. `3.20.3`.
    pub fn schema_version(&self) -> Option<&str> {
        self.metadata.get("EXPORT_SCHEMA_VERSION").map(String::as_str)
    }

    /// A select expression for `column` of `table`: the column itself, or NULL when this nsys lacks it.
    pub fn column_or_null(&self, table: &str, column: &str) -> String {
        if self.has_column(table, column) {
            format!("\"{column}\"")
        } else {
            "NULL".to_string()
        }
    }

    /// Fail unless `table` has every one of `columns`.
    pub fn require_columns(&self, file: &ExportFile, table: &str, columns: &[&str]) -> Result<()> {
        let missing: Vec<&str> = columns.iter().copied().filter(|c| !self.has_column(table, c)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::UnsupportedSchema {
                path: file.path.clone(),
                reason: format!("table {table} lacks required column(s) {} (unknown nsys schema)", missing.join(", ")),
            })
        }
    }

    /// Comma-separated names of the event tables traceforge reads that are present.
    pub fn present_event_tables(&self) -> Vec<String> {
        [
            KERNEL_TABLE,
            MEMCPY_TABLE,
            MEMSET_TABLE,
            RUNTIME_TABLE,
            DRIVER_TABLE,
            SYNC_TABLE,
            NVTX_TABLE,
            GRAPH_TRACE_TABLE,
        ]
        .iter()
        .filter(|t| self.has_table(t))
        .map(|t| t.to_string())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal export in a temp dir whose metadata rows are `meta`, probed.
    fn probe_with(name: &str, meta_table: &str, meta: &[(&str, &str)]) -> Result<Capabilities> {
        let dir = std::env::temp_dir().join(format!("traceforge-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE {meta_table} (name TEXT NOT NULL, value TEXT);"
        ))
        .unwrap();
        for (k, v) in meta {
            c.execute(&format!("INSERT INTO {meta_table} VALUES (?1, ?2)"), [k, v]).unwrap();
        }
        drop(c);
        let file = ExportFile::open(&path).unwrap();
        let conn = file.connect().unwrap();
        Capabilities::probe(&file, &conn)
    }

    #[test]
    fn a_newer_schema_major_is_refused_with_its_versions() {
        let newer = (MAX_SCHEMA_MAJOR + 1).to_string();
        let err = probe_with(
            "newer.sqlite",
            "META_DATA_EXPORT",
            &[
                ("EXPORT_SCHEMA_VERSION_MAJOR", &newer),
                ("EXPORT_SCHEMA_VERSION", &format!("{newer}.1.0")),
                ("EXPORT_PRODUCT_VERSION", "2031.1.0.0"),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedSchema { .. }), "{err:?}");
        assert_eq!(err.code(), "unsupported_schema");
        let text = err.to_string();
        assert!(text.contains(&format!("{newer}.1.0")) && text.contains("2031.1.0.0"), "{text}");
        assert!(text.contains("newer.sqlite"), "{text}");
    }

    #[test]
    fn the_major_is_taken_from_the_full_version_when_it_is_the_only_one() {
        // nsys 2022.x writes EXPORT_META_DATA and no separate major.
        let newer = format!("{}.0.1", MAX_SCHEMA_MAJOR + 1);
        let err = probe_with("newer_full.sqlite", "EXPORT_META_DATA", &[("EXPORT_SCHEMA_VERSION", &newer)]);
        assert!(matches!(err, Err(Error::UnsupportedSchema { .. })));
    }

    #[test]
    fn the_supported_schema_and_older_ones_are_accepted() {
        for major in 1..=MAX_SCHEMA_MAJOR {
            let version = format!("{major}.20.3");
            let caps = probe_with(
                &format!("schema{major}.sqlite"),
                "META_DATA_EXPORT",
                &[("EXPORT_SCHEMA_VERSION_MAJOR", &major.to_string()), ("EXPORT_SCHEMA_VERSION", &version)],
            )
            .unwrap();
            assert_eq!(caps.schema_version(), Some(version.as_str()));
        }
        // No version at all: nothing to refuse.
        assert!(probe_with("unversioned.sqlite", "META_DATA_EXPORT", &[]).is_ok());
    }
}
