//! NVTX events read chunk by chunk straight into their compact forms: GIL ranges and the rest.
//!
//! A Python capture's NVTX events are almost all GIL ranges (1.05M of 1.06M in a `transformers serve`
//! capture). Read the plain way, every event is first held as six i64 columns and a text column (72 bytes),
//! twice while the chunks are gathered, before the GIL ranges are picked out (25 bytes each). Here each
//! rowid chunk is split as soon as it is read, on the reader's worker: a range whose label is `Holding GIL`
//! or `Waiting for GIL` becomes a 33-byte candidate (thread, start, end, domain, state) and only the other
//! events are kept as events. Which domains are GIL domains is known once every chunk was read (a domain is
//! named by its creation event, anywhere in the table); then the candidates of a GIL domain are the GIL
//! ranges, in export order, and the kept events are filtered as [`user_event_rows`] filters them.
//!
//! Should a candidate lie outside every GIL domain (a user's range named like a GIL range), the table is
//! read again the plain way ([`split_plain`]): both ways always give the same rows
//! (`tests::chunked_split_equals_the_plain_way`).
use std::sync::atomic::AtomicBool;

use super::split_gil;
use crate::error::Result;
use crate::export::events::{self, NvtxEvents};
use crate::export::probe::NVTX_TABLE;
use crate::export::scan::{scan_chunks_with, ScanReader};
use crate::export::{Capabilities, ExportFile, StringTable};
use crate::ids::{thread_key, NULL_I64};
use crate::options::IngestOptions;
use crate::timeline::nvtx::{gil_domains, user_event_rows, GilIntervals, NvtxEventColumns, GIL_LABELS};

const NVTX_PUSH_POP: i64 = 59;
const NVTX_START_END: i64 = 60;

/// GIL-range candidates of one chunk (or of the trace).
#[derive(Default)]
struct Candidates {
    thread: Vec<i64>,
    start: Vec<i64>,
    end: Vec<i64>,
    domain: Vec<i64>,
    state: Vec<u8>,
}

/// The NVTX events as the timeline's NVTX model reads them (borrowed columns, no copy).
pub(crate) fn columns(ev: &NvtxEvents) -> NvtxEventColumns<'_> {
    NvtxEventColumns {
        start: &ev.start,
        end: &ev.end,
        event_type: &ev.event_type,
        global_tid: &ev.global_tid,
        text_id: &ev.text_id,
        domain_id: &ev.domain_id,
        text: &ev.text,
    }
}

/// The plain way: every event read, then split ([`split_gil`]).
pub(crate) fn split_plain(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
    strings: &StringTable,
) -> Result<(NvtxEvents, GilIntervals)> {
    Ok(split_gil(events::read_nvtx(file, caps, options, cancel)?, strings))
}

/// The NVTX events but the GIL ranges, and the GIL ranges, read chunk by chunk (see the module).
pub(crate) fn read_split(
    file: &ExportFile,
    caps: &Capabilities,
    options: &IngestOptions,
    cancel: &AtomicBool,
    strings: &StringTable,
) -> Result<(NvtxEvents, GilIntervals)> {
    let t = NVTX_TABLE;
    if !caps.has_table(t) {
        return split_plain(file, caps, options, cancel, strings);
    }
    caps.require_columns(file, t, &["start", "eventType"])?;
    let cols = ["start", "end", "eventType", "globalTid", "textId", "domainId"];
    let exprs: Vec<String> = cols.iter().map(|c| caps.column_or_null(t, c)).collect();
    let text = vec![caps.column_or_null(t, "text")];
    let state_of = |label: Option<&str>| GIL_LABELS.iter().find(|l| Some(l.0) == label).map(|l| l.1);
    let split = |mut c: Vec<Vec<i64>>, mut texts: Vec<Vec<Option<String>>>| {
        let take = |c: &mut Vec<Vec<i64>>, i: usize| std::mem::take(&mut c[i]);
        let (start, end, kind, gtid, text_id, domain) =
            (take(&mut c, 0), take(&mut c, 1), take(&mut c, 2), take(&mut c, 3), take(&mut c, 4), take(&mut c, 5));
        let text = std::mem::take(&mut texts[0]);
        let mut cand = Candidates::default();
        let mut user = NvtxEvents::default();
        let mut cached: Option<(i64, Option<u8>)> = None;
        for (i, label_text) in text.into_iter().enumerate() {
            let candidate = matches!(kind[i], NVTX_PUSH_POP | NVTX_START_END)
                && end[i] != NULL_I64
                && domain[i] != NULL_I64
                && gtid[i] != NULL_I64;
            let state = if !candidate {
                None
            } else if let Some(inline) = &label_text {
                state_of(Some(inline))
            } else {
                match cached {
                    Some((id, s)) if id == text_id[i] => s,
                    _ => {
                        let s = state_of(strings.get(text_id[i]));
                        cached = Some((text_id[i], s));
                        s
                    }
                }
            };
            if let Some(state) = state {
                cand.thread.push(thread_key(gtid[i]));
                cand.start.push(start[i]);
                cand.end.push(end[i]);
                cand.domain.push(domain[i]);
                cand.state.push(state);
            } else {
                user.start.push(start[i]);
                user.end.push(end[i]);
                user.event_type.push(kind[i]);
                user.global_tid.push(gtid[i]);
                user.text_id.push(text_id[i]);
                user.domain_id.push(domain[i]);
                user.text.push(label_text);
            }
        }
        (cand, user)
    };
    let parts =
        scan_chunks_with(file, t, &exprs, &text, options.reader_threads(), cancel, ScanReader::chosen(options), split)?;
    let (n_cand, n_user) = parts.iter().fold((0, 0), |(a, b), p| (a + p.0.start.len(), b + p.1.start.len()));
    let mut cand = Candidates::default();
    let mut user = NvtxEvents::default();
    cand.thread.reserve_exact(n_cand);
    cand.start.reserve_exact(n_cand);
    cand.end.reserve_exact(n_cand);
    cand.domain.reserve_exact(n_cand);
    cand.state.reserve_exact(n_cand);
    for (k, (c, u)) in parts.into_iter().enumerate() {
        // The chunks' pieces are heap allocations that glibc keeps once freed, while the gathered columns
        // are mapped apart and never reuse them: hand them back every few chunks, or the trace's candidates
        // would be resident twice at the end of the gather (20M GIL ranges: ~0.6 GB more).
        if k % 16 == 15 {
            crate::memory::release_free_memory();
        }
        cand.thread.extend_from_slice(&c.thread);
        cand.start.extend_from_slice(&c.start);
        cand.end.extend_from_slice(&c.end);
        cand.domain.extend_from_slice(&c.domain);
        cand.state.extend_from_slice(&c.state);
        user.start.extend_from_slice(&u.start);
        user.end.extend_from_slice(&u.end);
        user.event_type.extend_from_slice(&u.event_type);
        user.global_tid.extend_from_slice(&u.global_tid);
        user.text_id.extend_from_slice(&u.text_id);
        user.domain_id.extend_from_slice(&u.domain_id);
        user.text.extend(u.text);
        drop(c);
    }
    debug_assert_eq!(user.start.len(), n_user);
    let text_of = |id| strings.get(id);
    let domains = gil_domains(&columns(&user), text_of);
    let in_domain = |i: usize| domains.binary_search(&((cand.thread[i] >> 24) & 0xFF_FFFF, cand.domain[i])).is_ok();
    if !(0..cand.start.len()).all(in_domain) {
        // A range named like a GIL range outside every GIL domain: it is the user's; the plain way keeps
        // every event's place among the others.
        drop((cand, user));
        return split_plain(file, caps, options, cancel, strings);
    }
    let keep = user_event_rows(&columns(&user), &domains);
    if keep.len() < user.start.len() {
        let pick = |c: &[i64]| keep.iter().map(|&i| c[i]).collect::<Vec<i64>>();
        user = NvtxEvents {
            start: pick(&user.start),
            end: pick(&user.end),
            event_type: pick(&user.event_type),
            global_tid: pick(&user.global_tid),
            text_id: pick(&user.text_id),
            domain_id: pick(&user.domain_id),
            text: keep.iter().map(|&i| user.text[i].clone()).collect(),
        };
    }
    drop(cand.domain);
    let gil = GilIntervals { thread: cand.thread, state: cand.state, start: cand.start, end: cand.end };
    crate::memory::release_free_memory();
    Ok((user, gil))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use rusqlite::{params, Connection};

    use super::*;

    /// A small export: StringIds, metadata and NVTX events whose rows mix GIL ranges of two processes'
    /// GIL domains, user ranges, marks, unlabelled ranges in a GIL domain, and (when `stray`) a user's
    /// range labelled `Holding GIL` in a non-GIL domain; `n` rows (several reader chunks at 200k).
    fn export(path: &std::path::Path, n: usize, stray: bool) {
        let _ = std::fs::remove_file(path);
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA page_size = 4096;
             CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE META_DATA_EXPORT (name TEXT NOT NULL, value TEXT);
             CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL,
                 rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER,
                 endGlobalTid INTEGER, textId INTEGER, domainId INTEGER);
             INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION_MAJOR', '3');
             INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_SCHEMA_VERSION', '3.20.3');
             INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_VERSION', '2025.3.2.0');
             INSERT INTO StringIds VALUES (1, 'Holding GIL'), (2, 'Waiting for GIL'), (3, 'forward'),
                 (4, 'GIL Trace');
             BEGIN;",
        )
        .unwrap();
        let mut ins = c.prepare("INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId, domainId) VALUES (?, ?, ?, ?, ?, ?, ?)").unwrap();
        let (a, b) = ((100i64 << 24) | 101, (200i64 << 24) | 201);
        let mut x = 7u64;
        for i in 0..n as i64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (x >> 33) % 100;
            let t = if r.is_multiple_of(2) { a } else { b };
            let s = i * 10 + (r as i64 % 3); // ties on start now and then
            let none: Option<i64> = None;
            match r {
                0..=69 => ins.execute(params![s, s + 5, 59, None::<String>, t, 1 + (r % 2) as i64, 1]),
                70..=74 => ins.execute(params![s, s + 5, 60, Some("Holding GIL"), t, none, 1]), // inline label
                75..=79 => ins.execute(params![s, s + 50, 59, None::<String>, t, 3, 0]),        // the user's
                80..=84 => ins.execute(params![s, s + 9, 59, Some("step"), t, none, 2]),        // user domain 2
                85..=87 => ins.execute(params![s, none, 34, Some("mark"), t, none, 1]),         // mark in GIL domain
                88..=90 => ins.execute(params![s, s + 3, 59, None::<String>, t, 3, 1]), // unlabelled, GIL domain
                91..=92 => ins.execute(params![s, none, 59, None::<String>, t, 1, 1]),  // GIL range without end
                93 if i % 1000 == 0 => ins.execute(params![s, none, 75, Some("GIL Trace"), t, none, 1]),
                94 if stray && i > (n as i64) / 2 => {
                    ins.execute(params![s, s + 4, 59, None::<String>, t, 1, 2]) // GIL label, user domain 2
                }
                _ => ins.execute(params![s, s + 1, 59, Some("other"), t, none, 0]),
            }
            .unwrap();
        }
        drop(ins);
        // Domain 1 is the GIL domain of both processes, created late in the table.
        c.execute(
            "INSERT INTO NVTX_EVENTS (start, eventType, text, globalTid, domainId) VALUES (0, 75, 'GIL Trace', ?, 1)",
            [a],
        )
        .unwrap();
        c.execute(
            "INSERT INTO NVTX_EVENTS (start, eventType, textId, globalTid, domainId) VALUES (0, 75, 4, ?, 1)",
            [b],
        )
        .unwrap();
        c.execute(
            "INSERT INTO NVTX_EVENTS (start, eventType, text, globalTid, domainId) VALUES (0, 75, 'user', ?, 2)",
            [a],
        )
        .unwrap();
        c.execute_batch("COMMIT").unwrap();
    }

    fn both(path: &std::path::Path) -> [(NvtxEvents, GilIntervals); 2] {
        let file = ExportFile::open(path).unwrap();
        let conn = file.connect().unwrap();
        let caps = Capabilities::probe(&file, &conn).unwrap();
        let strings = StringTable::load(&file, &conn, true).unwrap();
        let options = IngestOptions::default();
        let cancel = AtomicBool::new(false);
        [
            read_split(&file, &caps, &options, &cancel, &strings).unwrap(),
            split_plain(&file, &caps, &options, &cancel, &strings).unwrap(),
        ]
    }

    fn same(a: &(NvtxEvents, GilIntervals), b: &(NvtxEvents, GilIntervals)) {
        assert_eq!(a.1, b.1, "GIL ranges");
        let (x, y) = (&a.0, &b.0);
        assert_eq!((&x.start, &x.end, &x.event_type), (&y.start, &y.end, &y.event_type));
        assert_eq!(
            (&x.global_tid, &x.text_id, &x.domain_id, &x.text),
            (&y.global_tid, &y.text_id, &y.domain_id, &y.text)
        );
    }

    #[test]
    fn chunked_split_equals_the_plain_way() {
        let dir = std::env::temp_dir().join(format!("tf-nvtx-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, stray) in [("gil.sqlite", false), ("stray.sqlite", true)] {
            let path = dir.join(name);
            export(&path, 200_000, stray);
            let [chunked, plain] = both(&path);
            assert!(chunked.1.len() > 100_000, "{}", chunked.1.len());
            assert!(chunked.0.start.len() > 20_000);
            same(&chunked, &plain);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
