//! A read-only reader of SQLite table b-trees, straight from the file (<https://www.sqlite.org/fileformat2.html>).
//!
//! Scans spend most of their time decoding rows in SQLite's VM; walking the leaf pages ourselves and decoding
//! only the columns asked for is several times cheaper. Pages are read one at a time with positioned reads
//! (no mmap, nothing held beyond a page per b-tree level), and every offset, length, page number and count
//! taken from the file is checked: a corrupt file yields [`Error::Corrupt`] naming the page and the problem,
//! never a panic, an endless loop or a huge allocation.
//!
//! Values come back as rusqlite's [`ValueRef`], so the callers convert them with exactly the code they use
//! for rows read through SQLite.
use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;

use crate::error::{Error, Result};

/// SQLite refuses b-trees deeper than this (`BTCURSOR_MAX_DEPTH`); deeper means a corrupt file.
pub const MAX_DEPTH: usize = 20;

/// No valid record is longer than SQLite's maximum row size (`SQLITE_MAX_LENGTH`, 1e9 by default).
const MAX_PAYLOAD: u64 = 1_000_000_000;

/// SQLite never stores b-tree content on the page holding this byte offset (the lock-byte page).
const PENDING_BYTE: u64 = 0x4000_0000;

const INTERIOR_TABLE: u8 = 0x05;
const LEAF_TABLE: u8 = 0x0D;

/// Decode a SQLite varint at the start of `buf`: the value and its length, or None if `buf` ends first.
#[inline(always)]
pub fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let b0 = *buf.first()?;
    if b0 < 0x80 {
        return Some((u64::from(b0), 1));
    }
    varint_long(buf)
}

#[inline(never)]
fn varint_long(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let b = *buf.get(i)?;
        v = (v << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    // The ninth byte contributes all eight of its bits.
    let b = *buf.get(8)?;
    Some(((v << 8) | u64::from(b), 9))
}

/// Bytes a value of `serial` type occupies in a record body, or None for the reserved types 10 and 11.
#[inline]
pub fn serial_size(serial: u64) -> Option<u64> {
    Some(match serial {
        0 | 8 | 9 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        5 => 6,
        6 | 7 => 8,
        10 | 11 => return None,
        n => (n - 12) / 2,
    })
}

/// Decode a value of `serial` type from `data`, which holds exactly [`serial_size`] bytes.
#[inline(always)]
pub fn decode_value(serial: u64, data: &[u8]) -> ValueRef<'_> {
    // Fixed-width big-endian loads; a short `data` (never produced by the reader) reads as NULL.
    #[inline(always)]
    fn be<const N: usize>(data: &[u8]) -> Option<[u8; N]> {
        data.get(..N)?.try_into().ok()
    }
    let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
    match serial {
        0 => ValueRef::Null,
        1 => int(be::<1>(data).map(|b| i64::from(b[0] as i8))),
        2 => int(be::<2>(data).map(|b| i64::from(i16::from_be_bytes(b)))),
        3 => int(be::<3>(data).map(|b| (i64::from(b[0] as i8) << 16) | (i64::from(b[1]) << 8) | i64::from(b[2]))),
        4 => int(be::<4>(data).map(|b| i64::from(i32::from_be_bytes(b)))),
        5 => int(be::<6>(data).map(|b| {
            (i64::from(i16::from_be_bytes([b[0], b[1]])) << 32)
                | i64::from(u32::from_be_bytes([b[2], b[3], b[4], b[5]]))
        })),
        6 => int(be::<8>(data).map(i64::from_be_bytes)),
        7 => be::<8>(data).map_or(ValueRef::Null, |b| ValueRef::Real(f64::from_be_bytes(b))),
        8 => ValueRef::Integer(0),
        9 => ValueRef::Integer(1),
        n if n >= 12 && n % 2 == 0 => ValueRef::Blob(data),
        n if n >= 13 => ValueRef::Text(data),
        _ => ValueRef::Null,
    }
}

/// How many bytes of a table-leaf payload of `payload` bytes stay on the leaf page when the usable page size
/// is `usable` (the rest goes to overflow pages).
#[inline]
pub fn local_payload(payload: u64, usable: u64) -> u64 {
    let max_local = usable - 35;
    if payload <= max_local {
        return payload;
    }
    let min_local = ((usable - 12) * 32 / 255) - 23;
    let k = min_local + ((payload - min_local) % (usable - 4));
    if k <= max_local {
        k
    } else {
        min_local
    }
}

/// The database header fields the reader depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub page_size: usize,
    /// Page size less the reserved bytes at the end of each page.
    pub usable: usize,
    /// Pages that may be referenced: the header's count when it is valid, bounded by the file's length.
    pub page_count: u32,
    pub read_version: u8,
    pub write_version: u8,
    /// 1 UTF-8, 2 UTF-16le, 3 UTF-16be.
    pub text_encoding: u32,
}

impl Header {
    /// Read and check the 100-byte header of the database at `path`.
    pub fn read(path: &Path, file: &File) -> Result<Header> {
        let corrupt = |reason: String| Error::Corrupt { path: path.into(), reason };
        let mut h = [0u8; 100];
        read_exact_at(path, file, &mut h, 0, "the database header")?;
        let page_size = match u16::from_be_bytes([h[16], h[17]]) {
            1 => 65536usize,
            p => p as usize,
        };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(corrupt(format!("database header: invalid page size {page_size}")));
        }
        let reserved = h[20] as usize;
        let usable = page_size - reserved;
        // SQLite requires at least 480 usable bytes; the spill formula assumes it.
        if usable < 480 {
            return Err(corrupt(format!("database header: {reserved} reserved bytes leave a page too small")));
        }
        let len = file.metadata().map_err(|e| super::open::io_error(path, e))?.len();
        let file_pages = (len / page_size as u64).min(u64::from(u32::MAX)) as u32;
        let header_pages = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
        let change_counter = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        let valid_for = u32::from_be_bytes([h[92], h[93], h[94], h[95]]);
        let page_count =
            if header_pages > 0 && change_counter == valid_for { header_pages.min(file_pages) } else { file_pages };
        Ok(Header {
            page_size,
            usable,
            page_count,
            read_version: h[18],
            write_version: h[19],
            text_encoding: u32::from_be_bytes([h[56], h[57], h[58], h[59]]),
        })
    }

    /// Why this database cannot be read directly (None when it can).
    ///
    /// Version 2 (WAL) is accepted: connections are opened with `immutable=1`, which ignores any `-wal` file,
    /// so SQLite too reads only the main file.
    pub fn unsupported(&self) -> Option<String> {
        if !matches!(self.read_version, 1 | 2) || !matches!(self.write_version, 1 | 2) {
            return Some(format!(
                "file format versions {}/{} (only 1 legacy and 2 WAL are read directly)",
                self.read_version, self.write_version
            ));
        }
        if self.text_encoding != 1 {
            return Some(format!("text encoding {} (only UTF-8 is read directly)", self.text_encoding));
        }
        None
    }
}

fn read_exact_at(path: &Path, file: &File, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Corrupt { path: path.into(), reason: format!("{what} lies beyond the end of the file (truncated?)") }
        } else {
            super::open::io_error(path, e)
        }
    })
}

/// One row met by a scan: its rowid and the first fields of its record.
pub struct Row<'a> {
    pub rowid: i64,
    /// Bytes ending where the payload's decoded part ends; the payload starts at `base`. The bytes before it
    /// (page and cell headers) let an integer be loaded as one 8-byte word ending at its last byte.
    buf: &'a [u8],
    base: usize,
    fields: &'a [Field],
}

/// Left-then-arithmetic-right shift that sign-extends a big-endian integer of serial type 1-6 held in the
/// low bytes of a u64.
const INT_SHIFT: [u32; 7] = [0, 56, 48, 40, 32, 16, 0];

impl<'a> Row<'a> {
    #[inline(always)]
    fn data(&self, f: &Field) -> Option<&'a [u8]> {
        self.buf.get(self.base + f.start as usize..self.base + f.end as usize)
    }

    /// Field `i` of the record, or None when the record has fewer fields (a column added by
    /// `ALTER TABLE ADD COLUMN` after the row was written) or `i` was beyond the fields the scan decoded.
    #[inline(always)]
    pub fn field(&self, i: usize) -> Option<ValueRef<'a>> {
        let f = self.fields.get(i)?;
        // Bounds were checked when the header was decoded; `get` keeps this panic-free regardless.
        Some(decode_value(f.serial, self.data(f)?))
    }

    /// Field `i` with its common cases told apart without building a [`ValueRef`] (the scans' fast path).
    #[inline(always)]
    pub fn stored(&self, i: usize) -> Stored<'a> {
        let Some(f) = self.fields.get(i) else { return Stored::Missing };
        match f.serial {
            0 => Stored::Null,
            serial @ 1..=6 => {
                let end = self.base + f.end as usize;
                match self.buf.get(end.wrapping_sub(8)..end).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
                    Some(word) => {
                        let shift = INT_SHIFT[serial as usize];
                        Stored::Integer(((u64::from_be_bytes(word) << shift) as i64) >> shift)
                    }
                    // Fewer than 8 bytes precede the end (only at the start of an assembled spilled payload).
                    None => match self.data(f).map(|d| decode_value(serial, d)) {
                        Some(ValueRef::Integer(v)) => Stored::Integer(v),
                        _ => Stored::Null,
                    },
                }
            }
            8 => Stored::Integer(0),
            9 => Stored::Integer(1),
            serial => self.data(f).map_or(Stored::Null, |d| Stored::Other(decode_value(serial, d))),
        }
    }
}

/// A record field as [`Row::stored`] sees it.
pub enum Stored<'a> {
    /// The record ends before this field.
    Missing,
    Null,
    Integer(i64),
    /// A float, text or blob.
    Other(ValueRef<'a>),
}

#[derive(Debug, Clone, Copy, Default)]
struct Field {
    serial: u64,
    // Offsets within the payload, which is at most MAX_PAYLOAD bytes.
    start: u32,
    end: u32,
}

/// An interior page on the path from the root to the current leaf.
struct Frame {
    page: u32,
    buf: Vec<u8>,
    /// Offset of the cell pointer array.
    ptrs: usize,
    cells: usize,
    right: u32,
    /// The child being visited: `0..cells` are cells' left children, `cells` the right-most pointer.
    child: usize,
    /// The rowids this page's subtree may hold, `(lower, upper]` (see [`Bounds`]).
    bounds: Bounds,
}

/// The rowids a subtree may hold, `lower < rowid <= upper`, as its ancestors' keys give them: the left child
/// of an interior cell holds the rowids up to the cell's key, the next child those above it. SQLite relies
/// on this to find a rowid; a file that breaks it reads differently depending on how it is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    lower: i128,
    upper: i128,
}

impl Bounds {
    /// Every rowid: the root's bounds.
    const ALL: Bounds = Bounds { lower: i64::MIN as i128 - 1, upper: i64::MAX as i128 };

    fn show(&self) -> String {
        let lower = if self.lower < i128::from(i64::MIN) { "-inf".to_string() } else { self.lower.to_string() };
        format!("({lower}, {}]", self.upper)
    }
}

/// The parsed b-tree page header.
struct PageInfo {
    kind: u8,
    ptrs: usize,
    cells: usize,
    right: u32,
}

/// The result of looking for a table's last rowid from the b-tree's right edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Empty,
    Rowid(i64),
    /// The right-most leaf is empty though not the root (not expected from SQLite): ask SQLite instead.
    Unknown,
}

/// Reads rows of table b-trees of one database file; one per thread (it owns its file handle and buffers).
pub struct TableReader {
    path: PathBuf,
    file: File,
    header: Header,
    leaf: Vec<u8>,
    frames: Vec<Frame>,
    /// Pages met by the current scan, so that a cycle in the tree is an error rather than an endless walk.
    visited: HashSet<u32>,
    overflow_seen: HashSet<u32>,
    /// The assembled start of a payload that spills to overflow pages.
    spilled: Vec<u8>,
    fields: Vec<Field>,
    /// The pages last read from the file, from which the next pages are copied without a system call.
    block: RefCell<Block>,
}

/// Bytes [`TableReader`] reads from the file at once.
const BLOCK_BYTES: usize = 64 << 10;

/// Consecutive pages `first..first + pages` of the file.
#[derive(Default)]
struct Block {
    first: u32,
    pages: u32,
    bytes: Vec<u8>,
}

impl TableReader {
    /// Open `path` for direct reading; `header` is the one [`Header::read`] returned for it.
    pub fn open(path: &Path, header: Header) -> Result<TableReader> {
        let file = File::open(path).map_err(|e| super::open::io_error(path, e))?;
        Ok(TableReader {
            path: path.into(),
            file,
            header,
            leaf: vec![0; header.page_size],
            frames: Vec::new(),
            visited: HashSet::new(),
            overflow_seen: HashSet::new(),
            spilled: Vec::new(),
            fields: Vec::new(),
            block: RefCell::default(),
        })
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt { path: self.path.clone(), reason }
    }

    /// Check a page pointer; `referrer` names its holder, built only for the error.
    fn check_page_number(&self, page: u32, referrer: impl FnOnce() -> String) -> Result<()> {
        if page == 0 || page > self.header.page_count {
            return Err(self.corrupt(format!(
                "{}: page number {page} is outside the database ({} pages)",
                referrer(),
                self.header.page_count
            )));
        }
        let offset = u64::from(page - 1) * self.header.page_size as u64;
        if offset == PENDING_BYTE {
            return Err(self.corrupt(format!("{}: points to the lock-byte page {page}", referrer())));
        }
        Ok(())
    }

    fn read_page(&self, page: u32, buf: &mut Vec<u8>) -> Result<()> {
        let size = self.header.page_size;
        buf.resize(size, 0);
        let mut block = self.block.borrow_mut();
        if !(block.first..block.first + block.pages).contains(&page) {
            // Read this page and the ones after it in one call: the leaves of a table lie mostly in runs of
            // consecutive pages, and one 64 KiB read costs the kernel far less than sixteen 4 KiB ones.
            let left = (u64::from(self.header.page_count) + 1).saturating_sub(u64::from(page)) as usize;
            let pages = (BLOCK_BYTES / size).min(left).max(1);
            block.bytes.resize(pages * size, 0);
            block.pages = 0; // until the read succeeds
            let offset = u64::from(page - 1) * size as u64;
            read_exact_at(&self.path, &self.file, &mut block.bytes, offset, &format!("page {page}"))?;
            block.first = page;
            block.pages = pages as u32;
        }
        let at = (page - block.first) as usize * size;
        buf.copy_from_slice(&block.bytes[at..at + size]);
        Ok(())
    }

    /// Read page `page` alone into `buf` (pages read out of order, where a block would be wasted).
    fn read_page_alone(&self, page: u32, buf: &mut Vec<u8>) -> Result<()> {
        let size = self.header.page_size;
        buf.resize(size, 0);
        read_exact_at(&self.path, &self.file, buf, u64::from(page - 1) * size as u64, &format!("page {page}"))
    }

    /// Parse the b-tree page header of `buf` (page `page`) and check that its cell pointer array fits.
    fn page_info(&self, page: u32, buf: &[u8]) -> Result<PageInfo> {
        let usable = self.header.usable;
        let hdr = if page == 1 { 100 } else { 0 };
        let kind = buf[hdr];
        let header_len = match kind {
            INTERIOR_TABLE => 12,
            LEAF_TABLE => 8,
            other => return Err(self.corrupt(format!("page {page}: not a table b-tree page (type {other:#04x})"))),
        };
        let cells = u16::from_be_bytes([buf[hdr + 3], buf[hdr + 4]]) as usize;
        let ptrs = hdr + header_len;
        if ptrs + 2 * cells > usable {
            return Err(self.corrupt(format!("page {page}: {cells} cells do not fit in the page")));
        }
        let right = if kind == INTERIOR_TABLE {
            u32::from_be_bytes([buf[hdr + 8], buf[hdr + 9], buf[hdr + 10], buf[hdr + 11]])
        } else {
            0
        };
        Ok(PageInfo { kind, ptrs, cells, right })
    }

    /// Offset of cell `i` of a page whose pointer array starts at `ptrs` and holds `cells` entries.
    #[inline]
    fn cell_offset(&self, page: u32, buf: &[u8], ptrs: usize, cells: usize, i: usize) -> Result<usize> {
        let p = ptrs + 2 * i;
        let off = u16::from_be_bytes([buf[p], buf[p + 1]]) as usize;
        if off < ptrs + 2 * cells || off >= self.header.usable {
            return Err(self.corrupt(format!("page {page}: cell {i} offset {off} is outside the cell content area")));
        }
        Ok(off)
    }

    /// Left child page and key of cell `i` of an interior table page.
    fn interior_cell(&self, page: u32, buf: &[u8], ptrs: usize, cells: usize, i: usize) -> Result<(u32, i64)> {
        let off = self.cell_offset(page, buf, ptrs, cells, i)?;
        let usable = self.header.usable;
        let bad = || self.corrupt(format!("page {page}: interior cell {i} runs past the end of the page"));
        let child = buf.get(off..off + 4).ok_or_else(bad)?;
        let child = u32::from_be_bytes([child[0], child[1], child[2], child[3]]);
        let (key, _) = varint(buf.get(off + 4..usable).ok_or_else(bad)?).ok_or_else(bad)?;
        Ok((child, key as i64))
    }

    /// Check that the keys of interior page `page` increase and lie within the page's `bounds` (each key
    /// bounds the child left of it, so keys out of order mean children whose rowids overlap).
    fn check_keys(&self, page: u32, buf: &[u8], info: &PageInfo, bounds: Bounds) -> Result<()> {
        let mut prev = bounds.lower;
        for i in 0..info.cells {
            let key = i128::from(self.interior_cell(page, buf, info.ptrs, info.cells, i)?.1);
            if key <= prev || key > bounds.upper {
                return Err(self.corrupt(format!(
                    "page {page}: interior key {key} of cell {i} is out of order or outside the range {} its \
                     parent gives the page",
                    bounds.show()
                )));
            }
            prev = key;
        }
        Ok(())
    }

    /// The bounds of child `child` (`cells`: the right-most) of an interior page with `bounds`.
    fn child_bounds(
        &self,
        page: u32,
        buf: &[u8],
        info: (usize, usize),
        bounds: Bounds,
        child: usize,
    ) -> Result<Bounds> {
        let (ptrs, cells) = info;
        let key = |i| self.interior_cell(page, buf, ptrs, cells, i).map(|c| i128::from(c.1));
        let lower = if child == 0 { bounds.lower } else { key(child - 1)? };
        let upper = if child == cells { bounds.upper } else { key(child)? };
        Ok(Bounds { lower, upper })
    }

    /// Check a child pointer of `parent` (None: the root) and that this scan has not met the page before.
    fn visit(&mut self, page: u32, parent: Option<u32>) -> Result<()> {
        let referrer = || parent.map_or_else(|| "table root".to_string(), |p| format!("page {p}"));
        self.check_page_number(page, referrer)?;
        if !self.visited.insert(page) {
            return Err(self.corrupt(format!("{}: page {page} is reached twice (the b-tree has a cycle)", referrer())));
        }
        Ok(())
    }

    /// Child `child` of the interior page held by frame `depth`, and the rowids it may hold.
    fn child_page(&self, depth: usize) -> Result<(u32, Bounds)> {
        let f = &self.frames[depth];
        let bounds = self.child_bounds(f.page, &f.buf, (f.ptrs, f.cells), f.bounds, f.child)?;
        if f.child == f.cells {
            Ok((f.right, bounds))
        } else {
            Ok((self.interior_cell(f.page, &f.buf, f.ptrs, f.cells, f.child)?.0, bounds))
        }
    }

    /// Descend from `page` (whose subtree may hold `bounds`) to a leaf, pushing interior pages as frames
    /// from `depth` on; when `seek` is given, take the child that may hold that rowid, else the left-most.
    /// Returns the new depth with the leaf loaded into `self.leaf`, its page number, header and bounds.
    ///
    /// Every page on the way is checked as SQLite's cursor checks it (a child page holds at least one cell)
    /// and each interior page's keys against its bounds.
    fn descend(
        &mut self,
        mut page: u32,
        mut bounds: Bounds,
        mut depth: usize,
        seek: Option<i64>,
    ) -> Result<(usize, u32, PageInfo, Bounds)> {
        loop {
            let parent = depth.checked_sub(1).map(|d| self.frames[d].page);
            self.visit(page, parent)?;
            let mut buf = std::mem::take(&mut self.leaf);
            let read = self.read_page(page, &mut buf);
            self.leaf = buf;
            read?;
            let info = self.page_info(page, &self.leaf)?;
            if let (Some(parent), 0) = (parent, info.cells) {
                return Err(self.corrupt(format!("page {page}: a child page of page {parent} without cells")));
            }
            if info.kind == LEAF_TABLE {
                return Ok((depth, page, info, bounds));
            }
            if depth + 1 >= MAX_DEPTH {
                return Err(self.corrupt(format!("page {page}: b-tree deeper than {MAX_DEPTH} levels")));
            }
            self.check_keys(page, &self.leaf, &info, bounds)?;
            let child = match seek {
                Some(key) => self.first_cell_at_or_above(page, &self.leaf, &info, key)?,
                None => 0,
            };
            if self.frames.len() <= depth {
                self.frames.push(Frame {
                    page: 0,
                    buf: Vec::new(),
                    ptrs: 0,
                    cells: 0,
                    right: 0,
                    child: 0,
                    bounds: Bounds::ALL,
                });
            }
            let frame = &mut self.frames[depth];
            std::mem::swap(&mut frame.buf, &mut self.leaf);
            frame.page = page;
            frame.ptrs = info.ptrs;
            frame.cells = info.cells;
            frame.right = info.right;
            frame.child = child;
            frame.bounds = bounds;
            (page, bounds) = self.child_page(depth)?;
            depth += 1;
        }
    }

    /// Index of the first cell of an interior page whose key is >= `key` (its left child holds the rowids
    /// up to that key), or the cell count (the right-most pointer) when there is none.
    fn first_cell_at_or_above(&self, page: u32, buf: &[u8], info: &PageInfo, key: i64) -> Result<usize> {
        let (mut lo, mut hi) = (0usize, info.cells);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.interior_cell(page, buf, info.ptrs, info.cells, mid)?.1 < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Call `on_row` for every row with `lo <= rowid < hi`, in rowid order, decoding the first `want_fields`
    /// fields of each record; `on_row` returns false to stop early. An `hi` of `i64::MAX` is inclusive (no
    /// larger rowid could exclude it), so `scan(root, i64::MIN, i64::MAX, ..)` reads every row.
    ///
    /// Every cell of every leaf visited is checked, the ones outside `[lo, hi)` included: rowids strictly
    /// increase within and across leaves and lie within the bounds the interior keys above give the leaf;
    /// no page is met twice. A file that breaks this is refused with [`Error::Corrupt`] naming the page.
    pub fn scan(
        &mut self,
        root: u32,
        lo: i64,
        hi: i64,
        want_fields: usize,
        mut on_row: impl FnMut(Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        let hi = if hi == i64::MAX { i128::from(i64::MAX) + 1 } else { i128::from(hi) };
        if i128::from(lo) >= hi {
            return Ok(());
        }
        self.visited.clear();
        let (mut depth, mut leaf_page, mut leaf, mut bounds) = self.descend(root, Bounds::ALL, 0, Some(lo))?;
        // The rowid before the next cell: rowids increase strictly from the leaf's lower bound on.
        let mut prev = bounds.lower;
        loop {
            for i in 0..leaf.cells {
                let (rowid, payload_len, local_start, cell_end) = self.leaf_cell(leaf_page, &leaf, i)?;
                let wide = i128::from(rowid);
                if wide <= prev || wide > bounds.upper {
                    return Err(self.out_of_order(leaf_page, i, rowid, prev, bounds));
                }
                prev = wide;
                if rowid < lo {
                    continue;
                }
                if wide >= hi {
                    return Ok(());
                }
                if !self.decode_row(leaf_page, rowid, payload_len, local_start, cell_end, want_fields, &mut on_row)? {
                    return Ok(());
                }
            }
            // Move to the next leaf: climb to the first ancestor with a child left, then descend its left edge.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let f = &self.frames[depth - 1];
                if f.child >= f.cells {
                    depth -= 1;
                    continue;
                }
                // The next child holds rowids above this cell's key: stop once they would all be >= hi.
                let key = self.interior_cell(f.page, &f.buf, f.ptrs, f.cells, f.child)?.1;
                if i128::from(key) + 1 >= hi {
                    return Ok(());
                }
                self.frames[depth - 1].child += 1;
                break;
            }
            let (next, next_bounds) = self.child_page(depth - 1)?;
            (depth, leaf_page, leaf, bounds) = self.descend(next, next_bounds, depth, None)?;
            // The keys above bound this leaf's lower end, which the previous leaf's last rowid may fall short
            // of (rows deleted since the key was set): the larger of the two.
            prev = prev.max(bounds.lower);
        }
    }

    fn out_of_order(&self, page: u32, cell: usize, rowid: i64, prev: i128, bounds: Bounds) -> Error {
        if i128::from(rowid) > bounds.upper || i128::from(rowid) <= bounds.lower {
            self.corrupt(format!(
                "page {page}: rowid {rowid} of cell {cell} is outside the range {} the interior keys above give \
                 the page",
                bounds.show()
            ))
        } else {
            self.corrupt(format!(
                "page {page}: rowid {rowid} of cell {cell} does not follow rowid {prev} (out of order)"
            ))
        }
    }

    /// Parse cell `i` of the loaded leaf: rowid, payload size, where the payload starts, and where the
    /// cell's local part ends (after the overflow pointer, if any).
    #[inline]
    fn leaf_cell(&self, page: u32, info: &PageInfo, i: usize) -> Result<(i64, u64, usize, usize)> {
        let buf = &self.leaf;
        let usable = self.header.usable;
        let off = self.cell_offset(page, buf, info.ptrs, info.cells, i)?;
        let bad = || self.corrupt(format!("page {page}: leaf cell {i} runs past the end of the page"));
        let (payload_len, n1) = varint(&buf[off..usable]).ok_or_else(bad)?;
        let (rowid, n2) = varint(buf.get(off + n1..usable).ok_or_else(bad)?).ok_or_else(bad)?;
        if payload_len > MAX_PAYLOAD {
            return Err(self.corrupt(format!("page {page}: cell {i} claims a {payload_len}-byte record")));
        }
        let start = off + n1 + n2;
        let local = local_payload(payload_len, usable as u64) as usize;
        let end = start + local + if (local as u64) < payload_len { 4 } else { 0 };
        if end > usable {
            return Err(bad());
        }
        Ok((rowid as i64, payload_len, start, end))
    }

    /// Decode the record of one leaf cell and hand it to `on_row`.
    #[allow(clippy::too_many_arguments)]
    fn decode_row(
        &mut self,
        page: u32,
        rowid: i64,
        payload_len: u64,
        start: usize,
        cell_end: usize,
        want_fields: usize,
        on_row: &mut impl FnMut(Row<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let local = local_payload(payload_len, self.header.usable as u64) as usize;
        let spills = (local as u64) < payload_len;
        if spills {
            // Gather the payload's start into `spilled`, only as far as the decoded fields need.
            let ptr = &self.leaf[cell_end - 4..cell_end];
            let first = u32::from_be_bytes([ptr[0], ptr[1], ptr[2], ptr[3]]);
            let mut spilled = std::mem::take(&mut self.spilled);
            spilled.clear();
            spilled.extend_from_slice(&self.leaf[start..start + local]);
            let result = self.spilled_fields(page, rowid, payload_len, first, &mut spilled, want_fields);
            self.spilled = spilled;
            let n = result?;
            let row = Row { rowid, buf: &self.spilled, base: 0, fields: &self.fields[..n] };
            on_row(row)
        } else {
            let payload = &self.leaf[start..start + local];
            let n = match decode_header(payload, payload_len, want_fields, &mut self.fields) {
                Ok(n) => n,
                Err(what) => return Err(self.corrupt(format!("page {page}: record of rowid {rowid}: {what}"))),
            };
            let row = Row { rowid, buf: &self.leaf[..start + local], base: start, fields: &self.fields[..n] };
            on_row(row)
        }
    }

    /// Decode the header of a spilled record, following its overflow chain as far as the fields need.
    fn spilled_fields(
        &mut self,
        page: u32,
        rowid: i64,
        payload_len: u64,
        first_overflow: u32,
        spilled: &mut Vec<u8>,
        want_fields: usize,
    ) -> Result<usize> {
        self.overflow_seen.clear();
        let mut next = first_overflow;
        let mut page_buf = Vec::new();
        let context =
            |r: &TableReader, what: String| r.corrupt(format!("page {page}: record of rowid {rowid}: {what}"));
        let mut fields = std::mem::take(&mut self.fields);
        let result = (|| -> Result<usize> {
            loop {
                // Decode with what is gathered so far; a header or field reaching further asks for more.
                match decode_header_partial(spilled, payload_len, want_fields, &mut fields) {
                    Ok(Decoded::Fields(n)) => return Ok(n),
                    Ok(Decoded::Need(need)) => {
                        while (spilled.len() as u64) < need.min(payload_len) {
                            if next == 0 {
                                return Err(context(self, "overflow chain ends early".into()));
                            }
                            self.check_page_number(next, || format!("page {page}: overflow chain of rowid {rowid}"))?;
                            if !self.overflow_seen.insert(next) {
                                return Err(context(self, format!("overflow page {next} is reached twice")));
                            }
                            self.read_page(next, &mut page_buf)?;
                            let usable = self.header.usable;
                            let take = ((payload_len - spilled.len() as u64) as usize).min(usable - 4);
                            spilled.extend_from_slice(&page_buf[4..4 + take]);
                            next = u32::from_be_bytes([page_buf[0], page_buf[1], page_buf[2], page_buf[3]]);
                        }
                    }
                    Err(what) => return Err(context(self, what)),
                }
            }
        })();
        self.fields = fields;
        result
    }
}

/// Decode the first `want` field descriptors of a record whose whole payload is `payload` into `fields`;
/// returns how many the record has (up to `want`).
#[inline]
fn decode_header(
    payload: &[u8],
    payload_len: u64,
    want: usize,
    fields: &mut Vec<Field>,
) -> std::result::Result<usize, String> {
    match decode_header_partial(payload, payload_len, want, fields)? {
        Decoded::Fields(n) => Ok(n),
        // Only possible if the payload slice were shorter than its declared length.
        Decoded::Need(_) => Err("record shorter than its declared size".into()),
    }
}

/// What [`decode_header_partial`] achieved.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// The first n entries of `fields` describe the record's first fields.
    Fields(usize),
    /// The first n bytes of the payload are needed to finish (more than were given).
    Need(u64),
}

/// Bytes of serial types below 128 (all a header byte can hold); 0xFF marks the reserved types 10 and 11.
const SMALL_SERIAL_SIZES: [u8; 128] = {
    let mut sizes = [0u8; 128];
    let mut t = 0;
    while t < 128 {
        sizes[t] = match t {
            0 | 8 | 9 => 0,
            1..=4 => t as u8,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => 0xFF,
            n => ((n - 12) / 2) as u8,
        };
        t += 1;
    }
    sizes
};

/// Decode the first `want` field descriptors of a record of `payload_len` bytes of which `have` is the start.
/// `fields` keeps at least `want` entries, so the per-row loop only overwrites them.
#[inline]
fn decode_header_partial(
    have: &[u8],
    payload_len: u64,
    want: usize,
    fields: &mut Vec<Field>,
) -> std::result::Result<Decoded, String> {
    if want == 0 {
        return Ok(Decoded::Fields(0));
    }
    if fields.len() < want {
        fields.resize(want, Field::default());
    }
    let slots = &mut fields[..want];
    let Some((header_len, n)) = varint(have) else {
        return if (have.len() as u64) < payload_len.min(9) {
            Ok(Decoded::Need(payload_len.min(9)))
        } else {
            Err("truncated header size".into())
        };
    };
    if header_len > payload_len || header_len < n as u64 {
        return Err(format!("header size {header_len} does not fit the {payload_len}-byte record"));
    }
    if (have.len() as u64) < header_len {
        return Ok(Decoded::Need(header_len));
    }
    let header = &have[..header_len as usize];
    let mut pos = n;
    let mut data = header_len;
    let mut count = 0;
    while pos < header.len() && count < slots.len() {
        let b = header[pos];
        let (serial, size) = if b < 0x80 && SMALL_SERIAL_SIZES[b as usize] != 0xFF {
            pos += 1;
            (u64::from(b), u64::from(SMALL_SERIAL_SIZES[b as usize]))
        } else {
            let (serial, used) = varint(&header[pos..]).ok_or("serial type runs past the header")?;
            pos += used;
            (serial, serial_size(serial).ok_or_else(|| format!("reserved serial type {serial}"))?)
        };
        // Saturating, and checked once after the loop: a record reaching past its end is refused as a
        // whole, so the truncated offsets of such fields are never used.
        let end = data.saturating_add(size);
        slots[count] = Field { serial, start: data as u32, end: end as u32 };
        count += 1;
        data = end;
    }
    if data > payload_len {
        return Err(format!("fields end at byte {data}, past the {payload_len}-byte record"));
    }
    let wanted_end = data;
    // The rest of the header (one byte a field, mostly): SQLite refuses a record whose fields do not end
    // exactly at its end, so the reader does too.
    while pos < header.len() {
        let b = header[pos];
        let size = if b < 0x80 && SMALL_SERIAL_SIZES[b as usize] != 0xFF {
            pos += 1;
            u64::from(SMALL_SERIAL_SIZES[b as usize])
        } else {
            let (serial, used) = varint(&header[pos..]).ok_or("serial type runs past the header")?;
            pos += used;
            serial_size(serial).ok_or_else(|| format!("reserved serial type {serial}"))?
        };
        data = data.saturating_add(size);
    }
    if data != payload_len {
        return Err(format!("fields end at byte {data} of the {payload_len}-byte record"));
    }
    if (have.len() as u64) < wanted_end {
        return Ok(Decoded::Need(wanted_end));
    }
    Ok(Decoded::Fields(count))
}

impl TableReader {
    /// The rowid at the right edge of the table (its largest), found without reading the other leaves.
    pub fn last_rowid(&mut self, root: u32) -> Result<Edge> {
        self.visited.clear();
        let mut page = root;
        let mut parent = None;
        let mut buf = std::mem::take(&mut self.leaf);
        let result = (|| {
            for depth in 0..MAX_DEPTH {
                self.visit(page, parent)?;
                self.read_page(page, &mut buf)?;
                let info = self.page_info(page, &buf)?;
                if info.kind == INTERIOR_TABLE {
                    parent = Some(page);
                    page = info.right;
                    continue;
                }
                if info.cells == 0 {
                    return Ok(if depth == 0 { Edge::Empty } else { Edge::Unknown });
                }
                let off = self.cell_offset(page, &buf, info.ptrs, info.cells, info.cells - 1)?;
                let bad = || self.corrupt(format!("page {page}: last cell runs past the end of the page"));
                let usable = self.header.usable;
                let (_, n1) = varint(&buf[off..usable]).ok_or_else(bad)?;
                let (rowid, _) = varint(buf.get(off + n1..usable).ok_or_else(bad)?).ok_or_else(bad)?;
                return Ok(Edge::Rowid(rowid as i64));
            }
            Err(self.corrupt(format!("table rooted at page {root}: b-tree deeper than {MAX_DEPTH} levels")))
        })();
        self.leaf = buf;
        result
    }

    /// The smallest rowid of the table, or None when it has no rows.
    pub fn first_rowid(&mut self, root: u32) -> Result<Option<i64>> {
        let mut first = None;
        self.scan(root, i64::MIN, i64::MAX, 0, |row| {
            first = Some(row.rowid);
            Ok(false)
        })?;
        Ok(first)
    }

    /// Rowids that cut the table into runs of about `leaves_per_chunk` leaf pages: each is one past the key
    /// of an interior cell just above the leaves, so a chunk `[cut, next cut)` is whole leaves. Only the
    /// interior pages are read (a few per thousand leaves), each checked like [`TableReader::scan`] checks
    /// them, and every page of the tree, leaves included, must be referenced once. Also returns the cells of
    /// the left-most leaf, a sample of the rows a leaf holds.
    pub fn split_points(&mut self, root: u32, leaves_per_chunk: usize) -> Result<(Vec<i64>, usize)> {
        self.visited.clear();
        // The depth of the left edge; every leaf lies at it (a child of another kind is refused).
        let mut levels = 0;
        let first_leaf_cells;
        let mut page = root;
        let mut buf = Vec::new();
        loop {
            levels += 1;
            if levels > MAX_DEPTH {
                return Err(self.corrupt(format!("table rooted at page {root}: deeper than {MAX_DEPTH} levels")));
            }
            self.check_page_number(page, || format!("table rooted at page {root}"))?;
            self.read_page_alone(page, &mut buf)?;
            let info = self.page_info(page, &buf)?;
            if info.kind == LEAF_TABLE {
                first_leaf_cells = info.cells;
                break;
            }
            page =
                if info.cells == 0 { info.right } else { self.interior_cell(page, &buf, info.ptrs, info.cells, 0)?.0 };
        }
        let mut cuts = Vec::new();
        let mut leaves = 0usize;
        let mut bufs: Vec<Vec<u8>> = (0..levels).map(|_| Vec::new()).collect();
        if levels > 1 {
            self.walk_interior(root, None, Bounds::ALL, levels - 1, &mut bufs, &mut |key| {
                leaves += 1;
                if leaves.is_multiple_of(leaves_per_chunk.max(1)) {
                    if let Some(k) = key.and_then(|k| k.checked_add(1)) {
                        cuts.push(k);
                    }
                }
            })?;
        } else {
            self.visit(root, None)?;
        }
        Ok((cuts, first_leaf_cells))
    }

    /// Walk the interior page `page` (with `below` interior levels left, counting it) of a table, calling
    /// `on_leaf` with the key bounding each leaf child from above (None for a right-most child).
    fn walk_interior(
        &mut self,
        page: u32,
        parent: Option<u32>,
        bounds: Bounds,
        below: usize,
        bufs: &mut [Vec<u8>],
        on_leaf: &mut impl FnMut(Option<i64>),
    ) -> Result<()> {
        self.visit(page, parent)?;
        let (buf, deeper) = bufs.split_first_mut().expect("one buffer per level");
        self.read_page_alone(page, buf)?;
        let info = self.page_info(page, buf)?;
        if info.kind != INTERIOR_TABLE {
            return Err(
                self.corrupt(format!("page {page}: a leaf where the b-tree's other branches have interior pages"))
            );
        }
        if parent.is_some() && info.cells == 0 {
            return Err(
                self.corrupt(format!("page {page}: a child page of page {} without cells", parent.unwrap_or(0)))
            );
        }
        self.check_keys(page, buf, &info, bounds)?;
        for child in 0..=info.cells {
            let (child_page, key) = if child == info.cells {
                (info.right, None)
            } else {
                let (p, k) = self.interior_cell(page, buf, info.ptrs, info.cells, child)?;
                (p, Some(k))
            };
            if below == 1 {
                self.visit(child_page, Some(page))?;
                on_leaf(key);
            } else {
                let child_bounds = self.child_bounds(page, buf, (info.ptrs, info.cells), bounds, child)?;
                self.walk_interior(child_page, Some(page), child_bounds, below - 1, deeper, on_leaf)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_every_length() {
        assert_eq!(varint(&[0x00]), Some((0, 1)));
        assert_eq!(varint(&[0x7F]), Some((127, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0x82, 0x80, 0x01]), Some(((2 << 14) | 1, 3)));
        // Nine bytes: the last contributes 8 bits, for 64 in all.
        assert_eq!(varint(&[0xFF; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), Some((1, 9)));
        // -1 as a rowid is stored as nine bytes of all ones.
        assert_eq!(varint(&[0xFF; 9]).map(|(v, _)| v as i64), Some(-1));
        assert_eq!(varint(&[]), None);
        assert_eq!(varint(&[0x80]), None);
        assert_eq!(varint(&[0xFF; 8]), None);
        // Trailing bytes are not consumed.
        assert_eq!(varint(&[0x05, 0xFF]), Some((5, 1)));
    }

    #[test]
    fn serial_types() {
        assert_eq!(serial_size(0), Some(0));
        assert_eq!(serial_size(5), Some(6));
        assert_eq!(serial_size(6), Some(8));
        assert_eq!(serial_size(7), Some(8));
        assert_eq!(serial_size(8), Some(0));
        assert_eq!(serial_size(10), None);
        assert_eq!(serial_size(11), None);
        assert_eq!(serial_size(12), Some(0));
        assert_eq!(serial_size(13), Some(0));
        assert_eq!(serial_size(19), Some(3));
        assert_eq!(serial_size(u64::MAX), Some((u64::MAX - 12) / 2));

        assert_eq!(decode_value(0, &[]), ValueRef::Null);
        assert_eq!(decode_value(1, &[0xFF]), ValueRef::Integer(-1));
        assert_eq!(decode_value(1, &[0x7F]), ValueRef::Integer(127));
        assert_eq!(decode_value(2, &[0x80, 0x00]), ValueRef::Integer(-32768));
        assert_eq!(decode_value(3, &[0x01, 0x00, 0x00]), ValueRef::Integer(65536));
        assert_eq!(decode_value(3, &[0xFF, 0xFF, 0xFE]), ValueRef::Integer(-2));
        assert_eq!(decode_value(4, &[0x7F, 0xFF, 0xFF, 0xFF]), ValueRef::Integer(i32::MAX as i64));
        assert_eq!(decode_value(5, &[0x80, 0, 0, 0, 0, 0]), ValueRef::Integer(-(1 << 47)));
        assert_eq!(decode_value(6, &i64::MIN.to_be_bytes()), ValueRef::Integer(i64::MIN));
        assert_eq!(decode_value(7, &1.5f64.to_be_bytes()), ValueRef::Real(1.5));
        assert_eq!(decode_value(8, &[]), ValueRef::Integer(0));
        assert_eq!(decode_value(9, &[]), ValueRef::Integer(1));
        assert_eq!(decode_value(18, b"abc"), ValueRef::Blob(b"abc"));
        assert_eq!(decode_value(19, b"abc"), ValueRef::Text(b"abc"));
        assert_eq!(decode_value(12, &[]), ValueRef::Blob(b""));
        assert_eq!(decode_value(13, &[]), ValueRef::Text(b""));
    }

    #[test]
    fn spill_formula() {
        // U = 4096: X = 4061, M = ((4096-12)*32/255)-23 = 489.
        assert_eq!(local_payload(100, 4096), 100);
        assert_eq!(local_payload(4061, 4096), 4061);
        // P = 4062: K = 489 + (4062-489) % 4092 = 4062 > X, so M.
        assert_eq!(local_payload(4062, 4096), 489);
        // P = 5000: K = 489 + 4511 % 4092 = 908 <= X.
        assert_eq!(local_payload(5000, 4096), 908);
        // U = 512: X = 477, M = (500*32/255)-23 = 39; P = 1000: K = 39 + 961 % 508 = 492 > X, so M.
        assert_eq!(local_payload(1000, 512), 39);
        // P = 600: K = 39 + 561 % 508 = 92.
        assert_eq!(local_payload(600, 512), 92);
        // U = 65536: X = 65501, M = (65524*32/255)-23 = 8199.
        // P = 65502: K = 8199 + 57303 = 65502 > X, so M; P = 100000: K = 8199 + 91801 % 65532 = 34468.
        assert_eq!(local_payload(65502, 65536), 8199);
        assert_eq!(local_payload(100_000, 65536), 34468);
        // With reserved bytes the usable size, not the page size, counts.
        assert_eq!(local_payload(4000, 4096 - 32), 4000);
        assert_eq!(local_payload(4040, 4096 - 32), {
            let m = ((4064 - 12) * 32 / 255) - 23;
            let k = m + (4040 - m) % (4064 - 4);
            if k <= 4064 - 35 {
                k
            } else {
                m
            }
        });
    }

    #[test]
    fn record_headers_are_checked() {
        let mut fields = Vec::new();
        // Header of 3 bytes: INTEGER(1 byte), TEXT of 2 bytes; then 0x05 'h' 'i'.
        let rec = [3u8, 1, 17, 5, b'h', b'i'];
        assert_eq!(decode_header(&rec, rec.len() as u64, 5, &mut fields), Ok(2));
        assert_eq!((fields[1].start, fields[1].end), (4, 6));
        // A field reaching past the record.
        let bad = [3u8, 1, 19, 5, b'h', b'i'];
        assert!(decode_header(&bad, bad.len() as u64, 5, &mut fields).is_err());
        // A header longer than the record.
        let bad = [9u8, 1];
        assert!(decode_header(&bad, bad.len() as u64, 5, &mut fields).is_err());
        // Reserved serial type.
        let bad = [2u8, 10];
        assert!(decode_header(&bad, bad.len() as u64, 5, &mut fields).is_err());
        // Only the fields asked for are decoded.
        assert_eq!(decode_header(&rec, rec.len() as u64, 1, &mut fields), Ok(1));
        // A partial payload asks for more.
        assert_eq!(decode_header_partial(&rec[..2], rec.len() as u64, 5, &mut fields), Ok(Decoded::Need(3)));
        assert_eq!(decode_header_partial(&rec[..4], rec.len() as u64, 5, &mut fields), Ok(Decoded::Need(6)));
    }
}
