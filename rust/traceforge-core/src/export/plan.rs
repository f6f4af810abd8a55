//! How a scan of one table runs: which reader (the direct b-tree reader or SQLite's VM), how each
//! selected expression is found in the table's records, and how the rowid span is cut into chunks.
//!
//! A [`ScanPlan`] is built once per (table, expressions) pair from the table's schema and shared by the
//! workers of [`super::scan`]; each worker reads its chunks through its own [`Slicer`]. Tables are read
//! straight from their b-tree pages ([`super::btree`]) when the table and the selected expressions allow
//! it, which decodes rows much faster than SQLite's VM; otherwise (a view, a WITHOUT ROWID or virtual
//! table, generated columns, an expression other than a quoted column or NULL, a non-literal column
//! default, a UTF-16 database or an unknown file format version) through a read-only SQLite connection.
use rusqlite::types::ValueRef;
use rusqlite::OptionalExtension;

use super::btree::{Edge, Header, Row, Stored, TableReader};
use super::open::ExportFile;
use crate::error::{Error, Result};
use crate::ids::NULL_I64;
use crate::options::IngestOptions;

/// Column-major integer rows of one table slice.
pub type IntColumns = Vec<Vec<i64>>;

/// Column-major text cells of one table slice.
pub type TextColumns = Vec<Vec<Option<String>>>;

/// Takes a chunk's rows one at a time as they are decoded, so a compact form is built without first
/// writing every selected column of every row to memory (for kernels, ~20 columns where 4 are kept).
pub trait RowSink {
    /// What the chunk becomes.
    type Out;
    /// One row: the integer value of each selected expression, in order.
    fn row(&mut self, values: &[i64]);
    /// The chunk's result, after its last row.
    fn finish(self) -> Self::Out;
}

/// Rows per unit of work handed to a scanning thread when a table is cut by rowid span (and the most rows a
/// chunk's buffers are sized for up front).
pub const CHUNK_ROWS: i64 = 1 << 16;

/// Bytes of leaf pages per unit of work when a table is cut by its pages (about 40,000 kernel rows).
pub const CHUNK_BYTES: usize = 4 << 20;

/// Which reader a scan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanReader {
    /// The direct b-tree reader when the table allows it, else SQLite.
    Auto,
    /// Always SQLite's VM.
    Sqlite,
    /// Always the direct reader; an error when the table cannot be read directly.
    Direct,
}

impl ScanReader {
    /// The reader an ingest with `options` uses: [`ScanReader::Auto`], or SQLite when forced.
    pub fn chosen(options: &IngestOptions) -> ScanReader {
        if options.force_sqlite_scan {
            ScanReader::Sqlite
        } else {
            ScanReader::Auto
        }
    }
}

fn sqlite_bounds(file: &ExportFile, conn: &rusqlite::Connection, table: &str) -> Result<Option<(i64, i64)>> {
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

#[inline(always)]
fn cell_to_i64(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        ValueRef::Null => NULL_I64,
        ValueRef::Real(f) => f as i64,
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(NULL_I64),
        ValueRef::Blob(_) => NULL_I64,
    }
}

#[inline]
fn cell_to_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// How the scans of one (table, expressions) pair run; built once and shared by the workers.
pub(super) struct ScanPlan {
    direct: Option<DirectPlan>,
    shape: Shape,
    /// Rows the SQLite reads of rowid ranges returned, for [`ScanPlan::verify_sqlite`].
    sqlite_rows: std::sync::atomic::AtomicU64,
}

/// What a table is, as far as cutting it into chunks goes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A view or a WITHOUT ROWID table: no rowid to cut by, read through SQLite in one piece.
    NoRowid,
    /// A rowid table; with its b-tree when the file's header and its root page allow walking it.
    Rowid(Option<(Header, u32)>),
}

/// The chunks a scan is cut into, in rowid order: half-open rowid ranges, the last one's `i64::MAX` end
/// inclusive (see [`TableReader::scan`]).
pub(super) struct Chunks {
    pub ranges: Vec<(i64, i64)>,
    /// Cut by pages (or one piece): each chunk holds a bounded number of rows whatever its rowid span,
    /// about this many (from a sample leaf).
    by_pages: Option<usize>,
}

impl Chunks {
    /// Rows to size chunk `i`'s buffers for: its rowid span up to [`CHUNK_ROWS`], when that is a bound on
    /// its rows; nothing up front for the chunks of a sparse table cut by span (rows unknown, and many).
    pub fn expected_rows(&self, i: usize) -> usize {
        let (lo, hi) = self.ranges[i];
        let span = (i128::from(hi) - i128::from(lo)).max(0);
        match self.by_pages {
            Some(rows) => span.min(rows as i128) as usize,
            None if span <= i128::from(CHUNK_ROWS) => span as usize,
            None => 0,
        }
    }
}

/// The header and root page of `table` when its b-tree can be read directly; Ok(Err(reason)) when not,
/// Ok(Ok(None)) for a view or a WITHOUT ROWID table (no rowid).
#[allow(clippy::type_complexity)]
fn btree_root(
    file: &ExportFile,
    conn: &rusqlite::Connection,
    table: &str,
) -> Result<std::result::Result<Option<(Header, u32)>, String>> {
    let sql_err = |e| file.sqlite_error(e);
    let entry: Option<(String, i64, Option<String>)> = conn
        .query_row(
            "SELECT type, rootpage, sql FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1 \
             COLLATE NOCASE ORDER BY type = 'table' DESC LIMIT 1",
            [table],
            |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0), r.get(2)?)),
        )
        .optional()
        .map_err(sql_err)?;
    let Some((kind, root, sql)) = entry else { return Ok(Err("absent from the schema".into())) };
    if kind == "view" {
        return Ok(Ok(None));
    }
    let normalized = sql.unwrap_or_default().to_ascii_uppercase().split_whitespace().collect::<Vec<_>>().join(" ");
    if normalized.contains("WITHOUT ROWID") {
        return Ok(Ok(None));
    }
    // A header SQLite would reject is SQLite's to report, so problems here only mean "not directly".
    let header = match std::fs::File::open(&file.path) {
        Ok(f) => match Header::read(&file.path, &f) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.to_string())),
        },
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(reason) = header.unsupported() {
        return Ok(Err(reason));
    }
    let Ok(root) = u32::try_from(root) else { return Ok(Err(format!("root page {root}"))) };
    if root == 0 || root > header.page_count {
        return Ok(Err(format!("root page {root} (a virtual table, or outside the file)")));
    }
    // The root must be a table b-tree page (a WITHOUT ROWID table's is an index page).
    let mut kind = [0u8; 1];
    let offset = u64::from(root - 1) * header.page_size as u64 + if root == 1 { 100 } else { 0 };
    let read = std::fs::File::open(&file.path).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut kind, offset)
    });
    if read.is_err() || !matches!(kind[0], 0x05 | 0x0D) {
        return Ok(Err(format!("root page {root} is not a table b-tree page")));
    }
    Ok(Ok(Some((header, root))))
}

impl ScanPlan {
    /// The plan of reading `exprs` (integers) and `text_exprs` (text) of `table` with `reader`.
    pub(super) fn build(
        file: &ExportFile,
        conn: &rusqlite::Connection,
        table: &str,
        exprs: &[String],
        text_exprs: &[String],
        reader: ScanReader,
    ) -> Result<ScanPlan> {
        let root = btree_root(file, conn, table)?;
        let shape = match &root {
            Ok(None) => Shape::NoRowid,
            Ok(Some(btree)) => Shape::Rowid(Some(*btree)),
            Err(_) => Shape::Rowid(None),
        };
        let build = |root| -> Result<std::result::Result<DirectPlan, String>> {
            match root {
                Ok(Some(btree)) => DirectPlan::build(file, conn, table, btree, exprs, text_exprs),
                Ok(None) => Ok(Err("a view or a WITHOUT ROWID table".into())),
                Err(reason) => Ok(Err(reason)),
            }
        };
        let direct = match reader {
            ScanReader::Sqlite => None,
            ScanReader::Auto => build(root)?.ok(),
            ScanReader::Direct => match build(root)? {
                Ok(plan) => Some(plan),
                Err(reason) => {
                    return Err(Error::Invalid(format!("table {table} cannot be read directly: {reason}")));
                }
            },
        };
        Ok(ScanPlan { direct, shape, sqlite_rows: Default::default() })
    }

    /// After a whole-table scan through SQLite by rowid ranges: check that the ranges read every row
    /// SQLite's own full scan of the table reads, once. SQLite finds a range's rows by seeking through the
    /// interior pages, so damaged keys there made ranges miss rows (or see rows of another range) that a
    /// full scan reads or refuses: the ranges' rows were silently not what the file holds (issue 19's
    /// fuzzing of the SQLite path). Each range's rowids are checked to lie in it, ascending (so ranges
    /// are disjoint); here one full scan of every column must succeed, ascend, and count as many rows.
    pub(super) fn verify_sqlite(&self, file: &ExportFile, table: &str) -> Result<()> {
        if self.direct.is_some() || matches!(self.shape, Shape::NoRowid) {
            return Ok(());
        }
        let conn = file.connect()?;
        // NOT INDEXED: the table's own b-tree in rowid order, not a covering index in its order. Every
        // column, as a plain `SELECT *` reads them: a range read decodes only the columns it selects, so a
        // record damaged in another one passed where SQLite's reading of the table fails.
        let sql = format!("SELECT rowid, * FROM \"{table}\" NOT INDEXED");
        let mut stmt = conn.prepare(&sql).map_err(|e| file.sqlite_error(e))?;
        let mut rows = stmt.query([]).map_err(|e| file.sqlite_error(e))?;
        let (mut count, mut last) = (0u64, None::<i64>);
        while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
            let rowid: i64 = row.get(0).map_err(|e| file.sqlite_error(e))?;
            if last.is_some_and(|l| rowid <= l) {
                return Err(damaged(
                    file,
                    table,
                    format!("SQLite's scan reads rowid {rowid} after {}", last.unwrap_or(0)),
                ));
            }
            last = Some(rowid);
            count += 1;
        }
        let read = self.sqlite_rows.load(std::sync::atomic::Ordering::Relaxed);
        if read != count {
            return Err(damaged(
                file,
                table,
                format!("SQLite's reads by rowid range found {read} rows, its full scan {count}"),
            ));
        }
        Ok(())
    }

    /// The chunks a whole-table scan reads: runs of [`CHUNK_BYTES`] of leaf pages cut at interior keys
    /// (whatever the rowids' spread) when the b-tree can be walked, else spans of [`CHUNK_ROWS`] rowids
    /// between the table's first and last; a view or WITHOUT ROWID table in one piece.
    pub(super) fn chunks(&self, file: &ExportFile, conn: &rusqlite::Connection, table: &str) -> Result<Chunks> {
        let whole = || Chunks { ranges: vec![(i64::MIN, i64::MAX)], by_pages: Some(CHUNK_ROWS as usize) };
        let btree = match self.shape {
            Shape::NoRowid => return Ok(whole()),
            Shape::Rowid(btree) => btree,
        };
        if let Some((header, root)) = btree {
            let mut reader = TableReader::open(&file.path, header)?;
            let leaves = (CHUNK_BYTES / header.page_size).max(1);
            match reader.split_points(root, leaves) {
                Ok((cuts, sample)) => {
                    let mut ranges = Vec::with_capacity(cuts.len() + 1);
                    let mut start = i64::MIN;
                    for cut in cuts {
                        ranges.push((start, cut));
                        start = cut;
                    }
                    ranges.push((start, i64::MAX));
                    // A little over the sample leaf's rows per leaf, so that buffers rarely grow.
                    let rows = (leaves * sample).saturating_add(leaves * sample / 8 + 64).min(4 * CHUNK_ROWS as usize);
                    return Ok(Chunks { ranges, by_pages: Some(rows) });
                }
                // The direct reader refuses a tree it cannot trust; SQLite's reading is SQLite's to judge.
                Err(e) if self.direct.is_some() => return Err(e),
                Err(_) => {}
            }
        }
        let Some((lo, hi)) = sqlite_bounds(file, conn, table)? else { return Ok(whole()) };
        Ok(Chunks { ranges: split_range(lo, hi), by_pages: None })
    }

    /// The `[min, max]` rowid range of the table, or None when it is empty.
    pub(super) fn bounds(
        &self,
        file: &ExportFile,
        conn: &rusqlite::Connection,
        table: &str,
    ) -> Result<Option<(i64, i64)>> {
        if matches!(self.shape, Shape::NoRowid) {
            return Err(Error::Invalid(format!("{table} has no rowid (a view or a WITHOUT ROWID table)")));
        }
        let Some(direct) = &self.direct else { return sqlite_bounds(file, conn, table) };
        let mut reader = TableReader::open(&file.path, direct.header)?;
        let Some(first) = reader.first_rowid(direct.root)? else { return Ok(None) };
        match reader.last_rowid(direct.root)? {
            Edge::Rowid(last) => Ok(Some((first, last))),
            Edge::Empty => Ok(None),
            Edge::Unknown => sqlite_bounds(file, conn, table),
        }
    }

    /// The rows a SQLite read of `[lo, hi)` selects: None (all) for a table without rowid, which can be
    /// read only whole.
    fn range(&self, lo: i64, hi: i64) -> Option<(i64, i64)> {
        match self.shape {
            Shape::NoRowid => None,
            Shape::Rowid(_) => Some((lo, hi)),
        }
    }

    /// Whether the table is read straight from its b-tree pages.
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// What one worker reads with: its own file handle or connection.
    pub(super) fn open(&self, file: &ExportFile) -> Result<Slicer> {
        Ok(match &self.direct {
            Some(d) => Slicer::Direct(Box::new(TableReader::open(&file.path, d.header)?)),
            None => Slicer::Sqlite(file.connect()?),
        })
    }

    /// The rows `lo <= rowid < hi`, column-major.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read(
        &self,
        file: &ExportFile,
        slicer: &mut Slicer,
        table: &str,
        exprs: &[String],
        text_exprs: &[String],
        (lo, hi): (i64, i64),
        expected: usize,
    ) -> Result<(IntColumns, TextColumns)> {
        match (slicer, &self.direct) {
            (Slicer::Direct(reader), Some(plan)) => plan.read(reader, lo, hi, expected),
            (Slicer::Sqlite(conn), _) => {
                let (cols, texts, rows) = read_slice(file, conn, table, exprs, text_exprs, self.range(lo, hi))?;
                self.sqlite_rows.fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
                Ok((cols, texts))
            }
            (Slicer::Direct(_), None) => Err(Error::Invalid("direct reader without a direct plan".into())),
        }
    }

    /// [`ScanPlan::read`] into a row sink (integer expressions only).
    pub(super) fn read_rows(
        &self,
        file: &ExportFile,
        slicer: &mut Slicer,
        table: &str,
        exprs: &[String],
        (lo, hi): (i64, i64),
        sink: &mut impl RowSink,
    ) -> Result<()> {
        match (slicer, &self.direct) {
            (Slicer::Direct(reader), Some(plan)) => plan.read_rows(reader, lo, hi, sink),
            (Slicer::Sqlite(conn), _) => {
                let (cols, _, rows) = read_slice(file, conn, table, exprs, &[], self.range(lo, hi))?;
                self.sqlite_rows.fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
                let mut values = vec![0i64; cols.len()];
                for i in 0..cols.first().map_or(0, Vec::len) {
                    for (value, col) in values.iter_mut().zip(&cols) {
                        *value = col[i];
                    }
                    sink.row(&values);
                }
                Ok(())
            }
            (Slicer::Direct(_), None) => Err(Error::Invalid("direct reader without a direct plan".into())),
        }
    }
}

/// What one worker reads with.
pub(super) enum Slicer {
    Sqlite(rusqlite::Connection),
    Direct(Box<TableReader>),
}

/// Where a selected value comes from in a table's records.
#[derive(Debug, Clone)]
enum Source {
    /// The literal `NULL`.
    Null,
    /// The rowid (an `INTEGER PRIMARY KEY` column is an alias of it, stored as NULL in the record).
    Rowid,
    /// Field `index` of the record; `default` stands in when the record is shorter (rows written before an
    /// `ALTER TABLE ADD COLUMN`); `real` for columns of REAL affinity, which SQLite reads back as floats even
    /// when it stored an integer.
    Field { index: usize, default: DefaultValue, real: bool },
}

#[derive(Debug, Clone)]
enum DefaultValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl Source {
    #[inline(always)]
    fn value<'a>(&'a self, row: &Row<'a>) -> ValueRef<'a> {
        match self {
            Source::Null => ValueRef::Null,
            Source::Rowid => ValueRef::Integer(row.rowid),
            Source::Field { index, default, real } => {
                let v = row.field(*index).unwrap_or(match default {
                    DefaultValue::Null => ValueRef::Null,
                    DefaultValue::Integer(i) => ValueRef::Integer(*i),
                    DefaultValue::Real(f) => ValueRef::Real(*f),
                    DefaultValue::Text(t) => ValueRef::Text(t.as_bytes()),
                });
                match v {
                    ValueRef::Integer(i) if *real => ValueRef::Real(i as f64),
                    v => v,
                }
            }
        }
    }
}

/// An integer column's source reduced to what the per-row loop needs; yields exactly
/// `cell_to_i64(source.value(row))`.
#[derive(Debug, Clone, Copy)]
enum IntSlot {
    Const(i64),
    Rowid,
    Field { index: usize, real: bool, missing: i64 },
}

impl IntSlot {
    fn of(source: &Source) -> IntSlot {
        match source {
            Source::Null => IntSlot::Const(NULL_I64),
            Source::Rowid => IntSlot::Rowid,
            Source::Field { index, default, real } => {
                let missing = match default {
                    DefaultValue::Null => NULL_I64,
                    DefaultValue::Integer(i) if *real => *i as f64 as i64,
                    DefaultValue::Integer(i) => *i,
                    DefaultValue::Real(f) => *f as i64,
                    DefaultValue::Text(t) => cell_to_i64(ValueRef::Text(t.as_bytes())),
                };
                IntSlot::Field { index: *index, real: *real, missing }
            }
        }
    }

    #[inline(always)]
    fn value(&self, row: &Row<'_>) -> i64 {
        match *self {
            IntSlot::Const(v) => v,
            IntSlot::Rowid => row.rowid,
            IntSlot::Field { index, real, missing } => match row.stored(index) {
                Stored::Integer(i) if real => i as f64 as i64,
                Stored::Integer(i) => i,
                Stored::Null => NULL_I64,
                Stored::Missing => missing,
                Stored::Other(v) => cell_to_i64(v),
            },
        }
    }
}

/// A scan that reads the table's b-tree directly.
#[derive(Debug, Clone)]
struct DirectPlan {
    header: Header,
    root: u32,
    /// The integer columns' sources, compiled for the per-row loop.
    int_slots: Vec<IntSlot>,
    texts: Vec<Source>,
    /// Record fields to decode per row: one past the last field any source reads.
    want_fields: usize,
}

impl DirectPlan {
    /// A direct plan, or Ok(Err(reason)) when the table must be read through SQLite.
    fn build(
        file: &ExportFile,
        conn: &rusqlite::Connection,
        table: &str,
        (header, root): (Header, u32),
        exprs: &[String],
        text_exprs: &[String],
    ) -> Result<std::result::Result<DirectPlan, String>> {
        let sql_err = |e| file.sqlite_error(e);
        struct Column {
            name: String,
            decl_type: String,
            default: Option<String>,
            pk: i64,
            hidden: i64,
        }
        let mut stmt =
            conn.prepare("SELECT name, type, dflt_value, pk, hidden FROM pragma_table_xinfo(?1)").map_err(sql_err)?;
        let columns: Vec<Column> = stmt
            .query_map([table], |r| {
                Ok(Column {
                    name: r.get(0)?,
                    decl_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    default: r.get(2)?,
                    pk: r.get(3)?,
                    hidden: r.get(4)?,
                })
            })
            .map_err(sql_err)?
            .collect::<std::result::Result<_, _>>()
            .map_err(sql_err)?;
        if columns.is_empty() {
            return Ok(Err("no columns".into()));
        }
        // Generated columns are computed, not stored, and hidden ones shift record positions.
        if columns.iter().any(|c| c.hidden != 0) {
            return Ok(Err("has generated or hidden columns".into()));
        }
        // A column named like the rowid shadows it in the SQLite path's `WHERE rowid ...`.
        if columns.iter().any(|c| ["rowid", "oid", "_rowid_"].iter().any(|r| c.name.eq_ignore_ascii_case(r))) {
            return Ok(Err("a column is named rowid, oid or _rowid_".into()));
        }
        // A single INTEGER PRIMARY KEY is an alias of the rowid unless SQLite made it a separate key with
        // its own index (the `INTEGER PRIMARY KEY DESC` quirk).
        let pks: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].pk > 0).collect();
        let rowid_alias = if pks.len() == 1 && columns[pks[0]].decl_type.eq_ignore_ascii_case("INTEGER") {
            let pk_indexes: i64 = conn
                .query_row("SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'pk'", [table], |r| r.get(0))
                .map_err(sql_err)?;
            (pk_indexes == 0).then_some(pks[0])
        } else {
            None
        };

        let source_of = |expr: &String| -> std::result::Result<Source, String> {
            let e = expr.trim();
            if e.eq_ignore_ascii_case("NULL") {
                return Ok(Source::Null);
            }
            let name = e
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .filter(|s| !s.replace("\"\"", "").contains('"'))
                .map(|s| s.replace("\"\"", "\""))
                .ok_or_else(|| format!("expression {expr} is neither a quoted column nor NULL"))?;
            let index = columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(&name))
                .ok_or_else(|| format!("no column {name}"))?;
            if rowid_alias == Some(index) {
                return Ok(Source::Rowid);
            }
            let affinity = Affinity::of(&columns[index].decl_type);
            let default = match &columns[index].default {
                None => DefaultValue::Null,
                Some(d) => parse_default(d, affinity).ok_or_else(|| format!("column {name} has default {d}"))?,
            };
            Ok(Source::Field { index, default, real: affinity == Affinity::Real })
        };
        let ints = match exprs.iter().map(source_of).collect::<std::result::Result<Vec<_>, _>>() {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let texts = match text_exprs.iter().map(source_of).collect::<std::result::Result<Vec<_>, _>>() {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let want_fields = ints
            .iter()
            .chain(&texts)
            .filter_map(|s| match s {
                Source::Field { index, .. } => Some(index + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let int_slots = ints.iter().map(IntSlot::of).collect();
        Ok(Ok(DirectPlan { header, root, int_slots, texts, want_fields }))
    }

    fn read(&self, reader: &mut TableReader, lo: i64, hi: i64, expected: usize) -> Result<(IntColumns, TextColumns)> {
        let mut cols: IntColumns = (0..self.int_slots.len()).map(|_| Vec::with_capacity(expected)).collect();
        let mut texts: TextColumns = vec![Vec::new(); self.texts.len()];
        reader.scan(self.root, lo, hi, self.want_fields, |row| {
            for (col, slot) in cols.iter_mut().zip(&self.int_slots) {
                col.push(slot.value(&row));
            }
            for (col, src) in texts.iter_mut().zip(&self.texts) {
                col.push(cell_to_text(src.value(&row)));
            }
            Ok(true)
        })?;
        Ok((cols, texts))
    }

    /// Hand each row's integer values to `sink` (a plan without text columns).
    fn read_rows(&self, reader: &mut TableReader, lo: i64, hi: i64, sink: &mut impl RowSink) -> Result<()> {
        let mut values = vec![0i64; self.int_slots.len()];
        reader.scan(self.root, lo, hi, self.want_fields, |row| {
            for (value, slot) in values.iter_mut().zip(&self.int_slots) {
                *value = slot.value(&row);
            }
            sink.row(&values);
            Ok(true)
        })
    }
}

/// A column's type affinity, from its declared type (<https://www.sqlite.org/datatype3.html>, 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    fn of(decl_type: &str) -> Affinity {
        let t = decl_type.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Affinity::Text
        } else if t.contains("BLOB") || t.is_empty() {
            Affinity::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

/// The value SQLite gives a column missing from a short record, for the simple literal defaults whose value
/// is plain (NULL, integers, floats in REAL columns, strings in TEXT and untyped columns); None for the
/// rest, which are left to SQLite.
fn parse_default(text: &str, affinity: Affinity) -> Option<DefaultValue> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("NULL") {
        return Some(DefaultValue::Null);
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(DefaultValue::Integer(i));
    }
    if affinity == Affinity::Real {
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() && t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) {
                return Some(DefaultValue::Real(f));
            }
        }
    }
    if matches!(affinity, Affinity::Text | Affinity::Blob) && t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        let inner = &t[1..t.len() - 1];
        if !inner.replace("''", "").contains('\'') {
            return Some(DefaultValue::Text(inner.replace("''", "'")));
        }
    }
    None
}

/// A table whose b-tree SQLite reads inconsistently.
fn damaged(file: &ExportFile, table: &str, what: String) -> Error {
    Error::Corrupt { path: file.path.clone(), reason: format!("{table}: {what} (the table's b-tree is damaged)") }
}

/// Read one rowid slice through SQLite: `exprs` are SQL expressions (column names or NULL), `text_exprs`
/// text columns; and the rows read. The rowids of a range are checked to lie in it, ascending.
fn read_slice(
    file: &ExportFile,
    conn: &rusqlite::Connection,
    table: &str,
    exprs: &[String],
    text_exprs: &[String],
    range: Option<(i64, i64)>,
) -> Result<(IntColumns, TextColumns, usize)> {
    let mut select: Vec<&str> = exprs.iter().chain(text_exprs.iter()).map(String::as_str).collect();
    if range.is_some() {
        select.push("rowid");
    }
    let select = if select.is_empty() { "NULL".to_string() } else { select.join(", ") };
    // An upper bound of i64::MAX is inclusive: a row may have that rowid.
    let filter = match range {
        None => "",
        Some((_, i64::MAX)) => " WHERE rowid >= ?1 AND rowid <= ?2",
        Some(_) => " WHERE rowid >= ?1 AND rowid < ?2",
    };
    // A rowid range is read from the table's own b-tree (NOT INDEXED), whose order the rowid check expects.
    let indexed = if range.is_some() { " NOT INDEXED" } else { "" };
    let sql = format!("SELECT {select} FROM \"{table}\"{indexed}{filter}");
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| file.sqlite_error(e))?;
    let mut rows = match range {
        None => stmt.query([]),
        Some((lo, hi)) => stmt.query([lo, hi]),
    }
    .map_err(|e| file.sqlite_error(e))?;
    let mut cols: IntColumns = vec![Vec::new(); exprs.len()];
    let mut texts: Vec<Vec<Option<String>>> = vec![Vec::new(); text_exprs.len()];
    let (mut count, mut last) = (0usize, None::<i64>);
    let rowid_at = exprs.len() + text_exprs.len();
    while let Some(row) = rows.next().map_err(|e| file.sqlite_error(e))? {
        if let Some((lo, hi)) = range {
            let rowid: i64 = row.get(rowid_at).map_err(|e| file.sqlite_error(e))?;
            let inside = rowid >= lo && (rowid < hi || hi == i64::MAX);
            if !inside || last.is_some_and(|l| rowid <= l) {
                let what = format!("SQLite's read of rowids [{lo}, {hi}) returned rowid {rowid}");
                return Err(damaged(file, table, what));
            }
            last = Some(rowid);
        }
        for (i, col) in cols.iter_mut().enumerate() {
            col.push(cell_to_i64(row.get_ref(i).map_err(|e| file.sqlite_error(e))?));
        }
        for (j, col) in texts.iter_mut().enumerate() {
            col.push(cell_to_text(row.get_ref(exprs.len() + j).map_err(|e| file.sqlite_error(e))?));
        }
        count += 1;
    }
    Ok((cols, texts, count))
}

/// Most chunks a scan is split into: rowids spread over a huge span (sparse, or a damaged b-tree edge) get
/// wider chunks rather than a list of ranges too long to allocate.
const MAX_CHUNKS: i128 = 1 << 16;

/// `[lo, hi]` cut into half-open chunks of at least [`CHUNK_ROWS`] rowids, in order.
pub(super) fn split_range(lo: i64, hi: i64) -> Vec<(i64, i64)> {
    let span = i128::from(hi) - i128::from(lo) + 1;
    let step = i128::from(CHUNK_ROWS).max((span + MAX_CHUNKS - 1) / MAX_CHUNKS);
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let mut ranges = Vec::new();
    let mut start = lo;
    while start <= hi {
        let end = start.saturating_add(step).min(hi.saturating_add(1));
        ranges.push((start, end));
        if end == i64::MAX {
            // [start, i64::MAX) is the last range expressible with an exclusive end.
            break;
        }
        start = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::{split_range, MAX_CHUNKS};

    #[test]
    fn ranges_cover_every_rowid_once() {
        let r = split_range(1, 200_000);
        assert_eq!(r.first().unwrap().0, 1);
        assert_eq!(r.last().unwrap().1, 200_001);
        for w in r.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        assert_eq!(split_range(5, 5), vec![(5, 6)]);
        // A huge span gets at most MAX_CHUNKS wider ranges, still covering it.
        let r = split_range(-10, i64::MAX);
        assert!(r.len() as i128 <= MAX_CHUNKS);
        assert_eq!((r.first().unwrap().0, r.last().unwrap().1), (-10, i64::MAX));
        for w in r.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        assert_eq!(split_range(i64::MIN, i64::MAX).len() as i128, MAX_CHUNKS);
    }
}
