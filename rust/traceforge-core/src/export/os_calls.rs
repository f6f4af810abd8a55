//! OS runtime calls (`OSRT_API`, `-t osrt`), held packed.
//!
//! A Python serving stack traced with `osrt` makes millions of calls (4.8M in a 26 s capture of four
//! agent threads), and they are held from the read until their rows are stored: as four `i64` columns that
//! was 32 bytes a call, and 40 while the table was read (its `eventClass` column too). Here each rowid
//! chunk is packed by the reader's worker that decoded it, keeping only the calls (`eventClass` 27): per
//! call the varints of its thread's index in the chunk's small thread list, its name id, the (zigzag)
//! distance of its start from the previous call's start and its length. Calls of one thread are
//! microseconds apart, so a call takes 8-10 bytes. Wrapping arithmetic makes the packing exact for any
//! value, NULL sentinels and unordered rows included (`tests::packing_gives_back_what_was_read`).
use std::sync::atomic::AtomicBool;

use super::open::ExportFile;
use super::probe::{self, Capabilities};
#[cfg(test)]
use super::scan::IntColumns;
use super::scan::{scan_chunk_rows, RowSink, ScanReader};
use crate::error::Result;
use crate::options::IngestOptions;
use crate::varint;

/// `OSRT_API.eventClass` of an OS runtime call: the real calls. nsys' zero-length start and finish
/// markers, classes 31 and 32, are left out as `nsys stats --report osrtsum` leaves them out.
pub const OS_RUNTIME_CLASS: i64 = 27;

/// One OS runtime call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsCall {
    /// Thread key `(pid << 24) | tid` ([`crate::ids::NULL_I64`] without a globalTid).
    pub thread: i64,
    /// `StringIds` id of the call's name.
    pub name_id: i64,
    pub start: i64,
    pub end: i64,
}

/// The calls of one rowid chunk, packed.
#[derive(Debug, Default, Clone)]
pub struct OsCallBlock {
    /// The chunk's distinct thread keys, in order of first appearance.
    threads: Vec<i64>,
    bytes: Vec<u8>,
    len: usize,
}

impl OsCallBlock {
    /// Pack `calls` (in the order given).
    pub fn pack(calls: impl IntoIterator<Item = OsCall>) -> OsCallBlock {
        let mut packer = OsCallPacker::default();
        calls.into_iter().for_each(|c| packer.push(c));
        packer.finish()
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The calls, in the order they were packed.
    pub fn iter(&self) -> impl Iterator<Item = OsCall> + '_ {
        let (mut at, mut previous_start) = (0usize, 0i64);
        (0..self.len).map(move |_| {
            let thread = self.threads[varint::get(&self.bytes, &mut at) as usize];
            let name_id = varint::unzigzag(varint::get(&self.bytes, &mut at));
            let start = previous_start.wrapping_add(varint::unzigzag(varint::get(&self.bytes, &mut at)));
            let end = start.wrapping_add(varint::unzigzag(varint::get(&self.bytes, &mut at)));
            previous_start = start;
            OsCall { thread, name_id, start, end }
        })
    }
}

/// Packs calls one at a time into an [`OsCallBlock`].
#[derive(Debug, Default)]
pub struct OsCallPacker {
    block: OsCallBlock,
    previous_start: i64,
    last_thread: Option<(i64, usize)>,
}

impl OsCallPacker {
    /// A packer with room for about `calls` calls (~9 bytes each).
    pub fn with_capacity(calls: usize) -> OsCallPacker {
        let mut packer = OsCallPacker::default();
        packer.block.bytes.reserve(calls * 9);
        packer
    }

    /// Append one call.
    pub fn push(&mut self, c: OsCall) {
        let block = &mut self.block;
        let index = match self.last_thread {
            Some((key, index)) if key == c.thread => index,
            _ => {
                // A chunk holds a handful of threads: a scan beats hashing.
                let index = block.threads.iter().position(|&t| t == c.thread).unwrap_or_else(|| {
                    block.threads.push(c.thread);
                    block.threads.len() - 1
                });
                self.last_thread = Some((c.thread, index));
                index
            }
        };
        varint::put(&mut block.bytes, index as u64);
        varint::put(&mut block.bytes, varint::zigzag(c.name_id));
        varint::put(&mut block.bytes, varint::zigzag(c.start.wrapping_sub(self.previous_start)));
        varint::put(&mut block.bytes, varint::zigzag(c.end.wrapping_sub(c.start)));
        self.previous_start = c.start;
        block.len += 1;
    }

    /// The packed block.
    pub fn finish(mut self) -> OsCallBlock {
        self.block.bytes.shrink_to_fit();
        self.block.threads.shrink_to_fit();
        self.block
    }
}

/// Every OS runtime call of a trace, in rowid order, packed block by block.
#[derive(Debug, Default, Clone)]
pub struct OsCalls {
    pub blocks: Vec<OsCallBlock>,
}

impl OsCalls {
    /// Number of calls.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(OsCallBlock::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.blocks.iter().all(OsCallBlock::is_empty)
    }

    /// The calls, in rowid order.
    pub fn iter(&self) -> impl Iterator<Item = OsCall> + '_ {
        self.blocks.iter().flat_map(OsCallBlock::iter)
    }
}

/// Read and pack every OS runtime call (an export without `OSRT_API` gives none).
pub(crate) fn read_os_calls(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
) -> Result<OsCalls> {
    let (threads, reader) = (options.reader_threads(), ScanReader::chosen(options));
    let t = probe::OSRT_TABLE;
    if !caps.has_table(t) {
        return Ok(OsCalls::default());
    }
    caps.require_columns(file, t, &["start", "end", "globalTid", "nameId"])?;
    // Without an eventClass column (older exports) every row is a call.
    let has_class = caps.has_column(t, "eventClass");
    let cols = ["start", "end", "globalTid", "nameId", "eventClass"];
    // Each row is packed as it is decoded: no chunk of five i64 columns is written first (40 bytes a
    // call of fresh memory, most of an OS-call-heavy read's page faults).
    let blocks = scan_chunk_rows(
        file,
        t,
        &cols.iter().map(|c| caps.column_or_null(t, c)).collect::<Vec<_>>(),
        threads,
        cancel,
        reader,
        |expected| CallSink { packer: OsCallPacker::with_capacity(expected), has_class },
    )?;
    Ok(OsCalls { blocks: blocks.into_iter().filter(|b| !b.is_empty()).collect() })
}

/// Packs the calls of one rowid chunk as its rows are decoded (columns start, end, globalTid, nameId,
/// eventClass).
struct CallSink {
    packer: OsCallPacker,
    has_class: bool,
}

impl RowSink for CallSink {
    type Out = OsCallBlock;

    fn row(&mut self, v: &[i64]) {
        if !self.has_class || v[4] == OS_RUNTIME_CLASS {
            self.packer.push(OsCall { thread: crate::ids::thread_key(v[2]), name_id: v[3], start: v[0], end: v[1] });
        }
    }

    fn finish(self) -> OsCallBlock {
        self.packer.finish()
    }
}

/// Pack the calls of one chunk's columns (start, end, globalTid, nameId, eventClass) the way [`CallSink`]
/// packs its rows (the plain way, for the tests).
#[cfg(test)]
fn pack_chunk(c: &IntColumns, has_class: bool) -> OsCallBlock {
    let mut sink = CallSink { packer: OsCallPacker::default(), has_class };
    let mut row = [0i64; 5];
    for i in 0..c[0].len() {
        for (value, col) in row.iter_mut().zip(c) {
            *value = col[i];
        }
        sink.row(&row);
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NULL_I64;

    #[test]
    fn packing_gives_back_what_was_read() {
        let calls = vec![
            OsCall { thread: 5 << 24 | 7, name_id: 12, start: 1_000, end: 1_500 },
            OsCall { thread: 5 << 24 | 7, name_id: 12, start: 1_400, end: 1_450 }, // nested, kept as is
            OsCall { thread: 5 << 24 | 9, name_id: 3, start: 900, end: 9_000_000_000 }, // earlier start, 9 s long
            OsCall { thread: NULL_I64, name_id: NULL_I64, start: NULL_I64, end: i64::MAX },
            OsCall { thread: 5 << 24 | 7, name_id: -4, start: i64::MAX, end: i64::MIN },
            OsCall { thread: 5 << 24 | 9, name_id: 0, start: -50, end: -60 }, // negative length
        ];
        let block = OsCallBlock::pack(calls.clone());
        assert_eq!(block.len(), calls.len());
        assert_eq!(block.iter().collect::<Vec<_>>(), calls);
        let all = OsCalls { blocks: vec![block.clone(), OsCallBlock::default(), block] };
        assert_eq!(all.len(), 2 * calls.len());
        assert_eq!(all.iter().collect::<Vec<_>>(), [calls.clone(), calls].concat());
    }

    #[test]
    fn a_chunk_keeps_only_calls() {
        let c: IntColumns = vec![vec![10, 20, 30], vec![11, 25, 31], vec![1, 2, 3], vec![7, 8, 9], vec![27, 26, 27]];
        let got: Vec<i64> = pack_chunk(&c, true).iter().map(|c| c.name_id).collect();
        assert_eq!(got, vec![7, 9]);
        assert_eq!(pack_chunk(&c, false).len(), 3);
    }

    #[test]
    fn a_typical_call_takes_a_few_bytes() {
        let calls = (0..10_000i64).map(|i| OsCall {
            thread: (100 << 24) | (i % 4),
            name_id: 40 + i % 3,
            start: 1_700_000_000_000 + i * 20_000,
            end: 1_700_000_000_000 + i * 20_000 + 3_000,
        });
        let block = OsCallBlock::pack(calls);
        assert!(block.bytes.len() <= 10 * block.len(), "{} bytes", block.bytes.len());
    }
}
