//! The NVTX range model: events resolved into named ranges and marks, ordered by start, with the
//! push/pop nesting level of each range on its thread.
//!
//! Its input is a neutral column view of the stored NVTX events ([`NvtxEventColumns`]) and a lookup of
//! interned strings, so this module needs nothing of the export reader.
use crate::ids::{decode_global_id, thread_key, NULL_I64};

/// The columns of the NVTX events of a trace, as stored (all event types), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct NvtxEventColumns<'a> {
    pub start: &'a [i64],
    pub end: &'a [i64],
    /// nsys' NVTX event type id (marks, push/pop and start/end ranges, domain creation, ...).
    pub event_type: &'a [i64],
    pub global_tid: &'a [i64],
    /// Interned text id, used when `text` is NULL.
    pub text_id: &'a [i64],
    pub domain_id: &'a [i64],
    pub text: &'a [Option<String>],
}

/// NVTX ranges and marks with resolved names, sorted by start.
#[derive(Debug, Default, Clone)]
pub struct NvtxRanges {
    pub pid: Vec<i64>,
    pub tid: Vec<i64>,
    /// Thread key `(pid << 24) | tid` (see [`thread_key`]).
    pub thread: Vec<i64>,
    pub start: Vec<i64>,
    /// [`NULL_I64`] for marks and ranges that never ended.
    pub end: Vec<i64>,
    /// `domain:text` when the range has a named domain, else its text.
    pub name: Vec<String>,
    pub domain: Vec<Option<String>>,
    /// "push_pop" | "start_end" | "mark"
    pub kind: Vec<&'static str>,
    /// Push/pop nesting depth on the thread (0 = outermost; always 0 for start/end ranges and marks).
    pub level: Vec<i64>,
}

impl NvtxRanges {
    /// Indices of the ranges NVTX projection applies to (push/pop and start/end ranges with an end),
    /// with their thread, start and end columns.
    pub fn projectable(&self) -> (Vec<usize>, [Vec<i64>; 3]) {
        let idx: Vec<usize> =
            (0..self.start.len()).filter(|&i| self.kind[i] != "mark" && self.end[i] != NULL_I64).collect();
        let col = |c: &[i64]| idx.iter().map(|&i| c[i]).collect::<Vec<i64>>();
        let cols = [col(&self.thread), col(&self.start), col(&self.end)];
        (idx, cols)
    }
}

// nsys' NVTX event type ids (the export's ENUM_NSYS_EVENT_TYPE).
const NVTX_MARK: i64 = 34;
const NVTX_PUSH_POP: i64 = 59;
const NVTX_START_END: i64 = 60;
const NVTX_DOMAIN_CREATE: i64 = 75;

/// The name of the NVTX domain Python's GIL tracing (`nsys -t python-gil`) creates its ranges in.
pub const GIL_DOMAIN: &str = "GIL Trace";
/// GIL range labels and their `gil_intervals.state` code (0 = hold, 1 = wait).
pub const GIL_LABELS: [(&str, u8); 2] = [("Holding GIL", 0), ("Waiting for GIL", 1)];

/// The (pid, domain id) of every domain created with the name [`GIL_DOMAIN`]: domain ids are small
/// per-process counters, so the domain is found per process by its create event's text.
pub fn gil_domains<'s>(ev: &NvtxEventColumns<'_>, text_of: impl Fn(i64) -> Option<&'s str>) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for i in 0..ev.start.len() {
        if ev.event_type[i] != NVTX_DOMAIN_CREATE || ev.domain_id[i] == NULL_I64 || ev.global_tid[i] == NULL_I64 {
            continue;
        }
        let name = ev.text[i].as_deref().or_else(|| text_of(ev.text_id[i]));
        if name == Some(GIL_DOMAIN) {
            out.push((decode_global_id(ev.global_tid[i]).0, ev.domain_id[i]));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether event `i` belongs to one of the GIL `domains` (from [`gil_domains`]).
#[inline]
fn in_gil_domain(ev: &NvtxEventColumns<'_>, i: usize, domains: &[(i64, i64)]) -> bool {
    !domains.is_empty()
        && ev.domain_id[i] != NULL_I64
        && ev.global_tid[i] != NULL_I64
        && domains.binary_search(&(decode_global_id(ev.global_tid[i]).0, ev.domain_id[i])).is_ok()
}

/// The GIL ranges of a trace: one row per `Holding GIL` / `Waiting for GIL` range (push/pop or start/end,
/// with an end) of a GIL domain, in export order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct GilIntervals {
    /// Thread key `(pid << 24) | tid`.
    pub thread: Vec<i64>,
    /// 0 = hold, 1 = wait ([`GIL_LABELS`]).
    pub state: Vec<u8>,
    pub start: Vec<i64>,
    pub end: Vec<i64>,
}

impl GilIntervals {
    /// Number of GIL ranges.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// The GIL ranges of the GIL `domains` ([`gil_domains`]); labels are resolved once per text id.
pub fn gil_intervals<'s>(
    ev: &NvtxEventColumns<'_>,
    domains: &[(i64, i64)],
    text_of: impl Fn(i64) -> Option<&'s str>,
) -> GilIntervals {
    let mut out = GilIntervals::default();
    if domains.is_empty() {
        return out;
    }
    let state_of = |label: Option<&str>| GIL_LABELS.iter().find(|l| Some(l.0) == label).map(|l| l.1);
    let mut cached: Option<(i64, Option<u8>)> = None;
    for i in 0..ev.start.len() {
        if !matches!(ev.event_type[i], NVTX_PUSH_POP | NVTX_START_END)
            || ev.end[i] == NULL_I64
            || !in_gil_domain(ev, i, domains)
        {
            continue;
        }
        let state = match &ev.text[i] {
            Some(text) => state_of(Some(text)),
            None => match cached {
                Some((id, s)) if id == ev.text_id[i] => s,
                _ => {
                    let s = state_of(text_of(ev.text_id[i]));
                    cached = Some((ev.text_id[i], s));
                    s
                }
            },
        };
        let Some(state) = state else { continue };
        out.thread.push(thread_key(ev.global_tid[i]));
        out.state.push(state);
        out.start.push(ev.start[i]);
        out.end.push(ev.end[i]);
    }
    out
}

/// Indices of the events that are not ranges or marks of the GIL `domains`: what [`build_nvtx_ranges`]
/// reads (domain creation events included). Ingest reads the GIL ranges out with [`gil_intervals`] as soon
/// as the events are read and keeps only these rows, so a Python capture's NVTX events (almost all GIL
/// ranges, 72 bytes each as read) are not held while the API tables stream: the GIL ranges then take 25
/// bytes each. Filtering keeps the events' order, so both give the same rows as on every event
/// (`tests::the_user_rows_give_the_same_ranges_as_every_event`).
pub fn user_event_rows(ev: &NvtxEventColumns<'_>, domains: &[(i64, i64)]) -> Vec<usize> {
    (0..ev.start.len())
        .filter(|&i| {
            !(matches!(ev.event_type[i], NVTX_MARK | NVTX_PUSH_POP | NVTX_START_END) && in_gil_domain(ev, i, domains))
        })
        .collect()
}

/// Resolve names and domains, order by start, and compute push/pop nesting levels per thread;
/// `text_of` resolves an interned text id. The GIL domains' ranges are not the user's: they are left out
/// (see [`gil_intervals`]), and levels are computed over the user's ranges only.
pub fn build_nvtx_ranges<'s>(ev: &NvtxEventColumns<'_>, text_of: impl Fn(i64) -> Option<&'s str> + Copy) -> NvtxRanges {
    let gil = gil_domains(ev, text_of);
    let name_of = |i: usize| ev.text[i].clone().or_else(|| text_of(ev.text_id[i]).map(str::to_string));
    let mut domains: Vec<(i64, String)> = Vec::new();
    for i in 0..ev.start.len() {
        if ev.event_type[i] == NVTX_DOMAIN_CREATE && ev.domain_id[i] != NULL_I64 {
            if let Some(name) = name_of(i) {
                domains.push((ev.domain_id[i], name));
            }
        }
    }
    let mut rows: Vec<usize> = (0..ev.start.len())
        .filter(|&i| matches!(ev.event_type[i], NVTX_MARK | NVTX_PUSH_POP | NVTX_START_END))
        .filter(|&i| !in_gil_domain(ev, i, &gil))
        .collect();
    rows.sort_by_key(|&i| (ev.start[i], thread_key(ev.global_tid[i]), i));
    let mut out = NvtxRanges::default();
    for i in rows {
        let text = name_of(i).unwrap_or_default();
        let domain = match ev.domain_id[i] {
            NULL_I64 | 0 => None,
            d => domains.iter().find(|x| x.0 == d).map(|x| x.1.clone()),
        };
        let (pid, tid) = decode_global_id(ev.global_tid[i]);
        out.pid.push(pid);
        out.tid.push(tid);
        out.thread.push(thread_key(ev.global_tid[i]));
        out.start.push(ev.start[i]);
        out.end.push(if ev.event_type[i] == NVTX_MARK { NULL_I64 } else { ev.end[i] });
        out.name.push(match &domain {
            Some(d) => format!("{d}:{text}"),
            None => text,
        });
        out.domain.push(domain);
        out.kind.push(match ev.event_type[i] {
            NVTX_PUSH_POP => "push_pop",
            NVTX_START_END => "start_end",
            _ => "mark",
        });
        out.level.push(0);
    }
    assign_levels(&mut out);
    out
}

/// Nesting depth of push/pop ranges on their thread (0 = outermost).
pub fn assign_levels(r: &mut NvtxRanges) {
    let mut idx: Vec<usize> = (0..r.start.len()).filter(|&i| r.kind[i] == "push_pop" && r.end[i] != NULL_I64).collect();
    idx.sort_by_key(|&i| (r.thread[i], r.start[i], std::cmp::Reverse(r.end[i])));
    let mut stack: Vec<i64> = Vec::new();
    let mut current_thread = None;
    for i in idx {
        if current_thread != Some(r.thread[i]) {
            stack.clear();
            current_thread = Some(r.thread[i]);
        }
        while stack.last().is_some_and(|&end| end <= r.start[i]) {
            stack.pop();
        }
        r.level[i] = stack.len() as i64;
        stack.push(r.end[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One NVTX event: (start, end, event type, globalTid, text, domain id).
    type Event = (i64, i64, i64, i64, &'static str, i64);

    fn ranges(events: &[Event]) -> NvtxRanges {
        let col = |f: fn(&Event) -> i64| events.iter().map(f).collect::<Vec<i64>>();
        let (start, end, event_type, global_tid, domain_id) =
            (col(|e| e.0), col(|e| e.1), col(|e| e.2), col(|e| e.3), col(|e| e.5));
        // Texts are interned (text NULL, textId set) except those starting with '=' (stored inline).
        let text: Vec<Option<String>> = events.iter().map(|e| e.4.strip_prefix('=').map(str::to_string)).collect();
        let text_id: Vec<i64> = (0..events.len() as i64).collect();
        let strings: Vec<&str> = events.iter().map(|e| e.4).collect();
        let view = NvtxEventColumns {
            start: &start,
            end: &end,
            event_type: &event_type,
            global_tid: &global_tid,
            text_id: &text_id,
            domain_id: &domain_id,
            text: &text,
        };
        build_nvtx_ranges(&view, |id| strings.get(id as usize).copied())
    }

    #[test]
    fn the_user_rows_give_the_same_ranges_as_every_event() {
        // GIL domain 1 of pid 100 (created by A), user domain 2, GIL-domain ranges, marks and unlabelled
        // ranges, the default domain, ties on start, and the same domain id in another process.
        let other: i64 = (200 << 24) | 201;
        let events: Vec<Event> = vec![
            (0, 0, NVTX_DOMAIN_CREATE, A, "=GIL Trace", 1),
            (0, 0, NVTX_DOMAIN_CREATE, A, "=user", 2),
            (5, 50, NVTX_PUSH_POP, A, "Holding GIL", 1),
            (5, 40, NVTX_PUSH_POP, A, "=step", 0),
            (6, 9, NVTX_PUSH_POP, A, "inner", 2),
            (50, 90, NVTX_PUSH_POP, B, "Waiting for GIL", 1),
            (55, 55, NVTX_MARK, A, "=mark in GIL", 1),
            (60, 70, NVTX_START_END, B, "Holding GIL", 1),
            (60, 80, NVTX_PUSH_POP, other, "=not a GIL range", 1),
            (61, 62, NVTX_PUSH_POP, A, "=unlabelled", 1),
            (70, 71, NVTX_PUSH_POP, B, "=b", 0),
        ];
        let col = |f: fn(&Event) -> i64| events.iter().map(f).collect::<Vec<i64>>();
        let (start, end, event_type, global_tid, domain_id) =
            (col(|e| e.0), col(|e| e.1), col(|e| e.2), col(|e| e.3), col(|e| e.5));
        let text: Vec<Option<String>> = events.iter().map(|e| e.4.strip_prefix('=').map(str::to_string)).collect();
        let text_id: Vec<i64> = (0..events.len() as i64).collect();
        let strings: Vec<&str> = events.iter().map(|e| e.4).collect();
        let lookup = |id: i64| strings.get(id as usize).copied();
        let all = NvtxEventColumns {
            start: &start,
            end: &end,
            event_type: &event_type,
            global_tid: &global_tid,
            text_id: &text_id,
            domain_id: &domain_id,
            text: &text,
        };
        let domains = gil_domains(&all, lookup);
        let keep = user_event_rows(&all, &domains);
        assert_eq!(keep, vec![0, 1, 3, 4, 8, 10]);
        let pick = |c: &[i64]| keep.iter().map(|&i| c[i]).collect::<Vec<i64>>();
        let (s2, e2, t2, g2, i2, d2) =
            (pick(&start), pick(&end), pick(&event_type), pick(&global_tid), pick(&text_id), pick(&domain_id));
        let x2: Vec<Option<String>> = keep.iter().map(|&i| text[i].clone()).collect();
        let some = NvtxEventColumns {
            start: &s2,
            end: &e2,
            event_type: &t2,
            global_tid: &g2,
            text_id: &i2,
            domain_id: &d2,
            text: &x2,
        };
        let (a, b) = (build_nvtx_ranges(&all, lookup), build_nvtx_ranges(&some, lookup));
        assert_eq!((&a.name, &a.start, &a.level, &a.kind), (&b.name, &b.start, &b.level, &b.kind));
        assert_eq!((&a.thread, &a.end, &a.domain), (&b.thread, &b.end, &b.domain));
        assert_eq!(gil_domains(&some, lookup), domains);
        assert_eq!(gil_intervals(&all, &domains, lookup).len(), 3);
    }

    const A: i64 = (1 << 56) | (100 << 24) | 101; // thread 101 of pid 100, on VM 1
    const B: i64 = (100 << 24) | 102; // another thread of the same process

    #[test]
    fn push_pop_ranges_nest_per_thread_and_start_end_ranges_do_not() {
        let r = ranges(&[
            (60, 90, NVTX_PUSH_POP, A, "late", 0),
            (0, 100, NVTX_PUSH_POP, A, "outer", 0),
            (10, 50, NVTX_PUSH_POP, A, "middle", 0),
            (20, 30, NVTX_PUSH_POP, A, "inner", 0),
            // Another thread's range inside A's: its own outermost level.
            (15, 40, NVTX_PUSH_POP, B, "other thread", 0),
            // A start/end range spanning A's ranges: level 0, and no level for A's ranges.
            (5, 95, NVTX_START_END, A, "async", 0),
            (25, 0, NVTX_MARK, A, "mark", 0),
        ]);
        let by_name = |n: &str| r.name.iter().position(|x| x == n).unwrap();
        let level = |n: &str| r.level[by_name(n)];
        assert_eq!(
            [level("outer"), level("middle"), level("inner"), level("late")],
            [0, 1, 2, 1],
            "nesting on thread A"
        );
        assert_eq!(level("other thread"), 0);
        assert_eq!(level("async"), 0);
        assert_eq!(r.kind[by_name("async")], "start_end");
        let mark = by_name("mark");
        assert_eq!((r.kind[mark], r.end[mark], r.level[mark]), ("mark", NULL_I64, 0));
        // Ordered by start; the thread key drops the VM id; pid and tid decoded.
        assert!(r.start.windows(2).all(|w| w[0] <= w[1]));
        let outer = by_name("outer");
        assert_eq!((r.pid[outer], r.tid[outer], r.thread[outer]), (100, 101, (100 << 24) | 101));
        // Only ranges with an end are projected; marks are not.
        let (projected, [_, starts, _]) = r.projectable();
        assert_eq!(projected.len(), 6);
        assert!(!starts.contains(&25));
    }

    #[test]
    fn gil_ranges_are_not_user_ranges_and_do_not_nest_them() {
        const OTHER_PID: i64 = (200 << 24) | 201;
        let events: Vec<Event> = vec![
            (0, 0, NVTX_DOMAIN_CREATE, A, "=GIL Trace", 1),
            (0, 50, NVTX_PUSH_POP, A, "Holding GIL", 1),
            (40, 1000, NVTX_PUSH_POP, A, "=step", 0),
            (45, 70, NVTX_PUSH_POP, A, "=inner", 0),
            (250, 450, NVTX_PUSH_POP, B, "Waiting for GIL", 1),
            (300, 310, NVTX_PUSH_POP, B, "something else", 1),
            // Domain 1 of another process is not a GIL domain.
            (5, 6, NVTX_PUSH_POP, OTHER_PID, "=Holding GIL", 1),
        ];
        let r = ranges(&events);
        // (Domain names are looked up by id alone, as before: the other process' range is named after it.)
        assert_eq!(r.name, vec!["GIL Trace:Holding GIL".to_string(), "step".to_string(), "inner".to_string()]);
        assert_eq!(r.level, vec![0, 0, 1]);
        let col = |f: fn(&Event) -> i64| events.iter().map(f).collect::<Vec<i64>>();
        let (start, end, event_type, global_tid, domain_id) =
            (col(|e| e.0), col(|e| e.1), col(|e| e.2), col(|e| e.3), col(|e| e.5));
        let text: Vec<Option<String>> = events.iter().map(|e| e.4.strip_prefix('=').map(str::to_string)).collect();
        let text_id: Vec<i64> = (0..events.len() as i64).collect();
        let strings: Vec<&str> = events.iter().map(|e| e.4).collect();
        let view = NvtxEventColumns {
            start: &start,
            end: &end,
            event_type: &event_type,
            global_tid: &global_tid,
            text_id: &text_id,
            domain_id: &domain_id,
            text: &text,
        };
        let text_of = |id: i64| strings.get(id as usize).copied();
        let domains = gil_domains(&view, text_of);
        assert_eq!(domains, vec![(100, 1)]);
        let g = gil_intervals(&view, &domains, text_of);
        assert_eq!(g.state, vec![0, 1]);
        assert_eq!((g.start, g.end), (vec![0, 250], vec![50, 450]));
        assert_eq!(g.thread, vec![(100 << 24) | 101, (100 << 24) | 102]);
    }

    #[test]
    fn domains_prefix_names_and_inline_text_wins() {
        let r = ranges(&[
            (0, 0, NVTX_DOMAIN_CREATE, A, "=gpu", 7),
            (1, 2, NVTX_PUSH_POP, A, "step", 7),
            (3, 4, NVTX_PUSH_POP, A, "=inline", 0),
        ]);
        assert_eq!(r.name, vec!["gpu:step".to_string(), "inline".to_string()]);
        assert_eq!(r.domain, vec![Some("gpu".to_string()), None]);
    }
}
