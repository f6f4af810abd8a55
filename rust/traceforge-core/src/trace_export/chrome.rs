//! The Chrome trace-event JSON sink (`{"traceEvents": [...]}`): complete events (`"ph":"X"`), counters
//! (`"C"`), flows (`"s"`/`"t"`, bound to the enclosing slice) and process/thread names (`"M"`).
//!
//! The format has only processes and threads, so every track becomes one: a track with a pid and no tid
//! is a process; a track with both is that thread; any other track (a GPU stream, a category or overlap
//! lane under a thread) is a thread of its nearest ancestor process with a made-up tid, named after the
//! track. A root track without a pid (a GPU) gets a made-up pid. Times are microseconds with three
//! decimals, i.e. exact nanoseconds.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use super::{Sink, TrackInfo};

/// Made-up pids and tids start here, above any Linux pid (`pid_max` <= 2^22).
const SYNTHETIC_BASE: i64 = 1 << 24;

pub(super) struct ChromeSink {
    /// track uuid -> (pid, tid); counters: (pid, -1) with the name in `counter_names`.
    ids: HashMap<u64, (i64, i64)>,
    counter_names: HashMap<u64, String>,
    next_synthetic: i64,
    first: bool,
    line: String,
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Nanoseconds as JSON microseconds, exactly (`1234567` -> `1234.567`).
fn push_us(out: &mut String, ns: i64) {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:03}", a / 1000, a % 1000);
}

impl ChromeSink {
    pub(super) fn start(out: &mut dyn Write) -> std::io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(ChromeSink {
            ids: HashMap::new(),
            counter_names: HashMap::new(),
            next_synthetic: SYNTHETIC_BASE,
            first: true,
            line: String::new(),
        })
    }

    fn synthetic(&mut self) -> i64 {
        self.next_synthetic += 1;
        self.next_synthetic
    }

    fn flush_line(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        if !self.first {
            out.write_all(b",\n")?;
        }
        self.first = false;
        out.write_all(self.line.as_bytes())
    }

    fn metadata(
        &mut self,
        out: &mut dyn Write,
        what: &str,
        pid: i64,
        tid: Option<i64>,
        name: &str,
        rank: i64,
    ) -> std::io::Result<()> {
        for (kind, arg) in
            [(what, None), (if tid.is_some() { "thread_sort_index" } else { "process_sort_index" }, Some(rank))]
        {
            self.line.clear();
            let _ = write!(self.line, "{{\"ph\":\"M\",\"name\":\"{kind}\",\"pid\":{pid}");
            if let Some(t) = tid {
                let _ = write!(self.line, ",\"tid\":{t}");
            }
            match arg {
                None => {
                    self.line.push_str(",\"args\":{\"name\":");
                    push_json_str(&mut self.line, name);
                    self.line.push_str("}}");
                }
                Some(r) => {
                    let _ = write!(self.line, ",\"args\":{{\"sort_index\":{r}}}}}");
                }
            }
            self.flush_line(out)?;
        }
        Ok(())
    }
}

impl Sink for ChromeSink {
    fn track(&mut self, out: &mut dyn Write, t: &TrackInfo) -> std::io::Result<()> {
        let parent_pid = t.parent.and_then(|p| self.ids.get(&p)).map(|&(pid, _)| pid);
        if t.counter {
            let pid = parent_pid.or(t.pid).unwrap_or(0);
            self.ids.insert(t.uuid, (pid, -1));
            let name = match &t.unit {
                Some(u) => format!("{} ({u})", t.name),
                None => t.name.clone(),
            };
            self.counter_names.insert(t.uuid, name);
            return Ok(());
        }
        match (t.pid, t.tid) {
            (Some(pid), Some(tid)) => {
                self.ids.insert(t.uuid, (pid, tid));
                self.metadata(out, "thread_name", pid, Some(tid), &t.name, t.rank)
            }
            (pid, None) if t.parent.is_none() => {
                let pid = match pid {
                    Some(p) => p,
                    None => self.synthetic(),
                };
                self.ids.insert(t.uuid, (pid, pid));
                self.metadata(out, "process_name", pid, None, &t.name, t.rank)
            }
            _ => {
                let pid = parent_pid.or(t.pid).unwrap_or(0);
                let tid = self.synthetic();
                self.ids.insert(t.uuid, (pid, tid));
                self.metadata(out, "thread_name", pid, Some(tid), &t.name, t.rank)
            }
        }
    }

    fn slice(
        &mut self,
        out: &mut dyn Write,
        track: u64,
        start: i64,
        end: i64,
        name: &str,
        flow_out: Option<u64>,
        flow_in: Option<u64>,
    ) -> std::io::Result<()> {
        let (pid, tid) = self.ids.get(&track).copied().unwrap_or((0, 0));
        self.line.clear();
        self.line.push_str("{\"ph\":\"X\",\"name\":");
        push_json_str(&mut self.line, name);
        let _ = write!(self.line, ",\"pid\":{pid},\"tid\":{tid},\"ts\":");
        push_us(&mut self.line, start);
        self.line.push_str(",\"dur\":");
        push_us(&mut self.line, end - start);
        self.line.push('}');
        self.flush_line(out)?;
        for (id, ph) in flow_out.map(|i| (i, "s")).into_iter().chain(flow_in.map(|i| (i, "t"))) {
            self.line.clear();
            let _ = write!(
                self.line,
                "{{\"ph\":\"{ph}\",\"name\":\"launch\",\"cat\":\"launch\",\"id\":{id},\"pid\":{pid},\"tid\":{tid},\"ts\":"
            );
            push_us(&mut self.line, start);
            self.line.push_str(if ph == "s" { "}" } else { ",\"bp\":\"e\"}" });
            self.flush_line(out)?;
        }
        Ok(())
    }

    fn counter(&mut self, out: &mut dyn Write, track: u64, ts: i64, value: f64) -> std::io::Result<()> {
        let (pid, _) = self.ids.get(&track).copied().unwrap_or((0, 0));
        let name = self.counter_names.get(&track).cloned().unwrap_or_default();
        self.line.clear();
        self.line.push_str("{\"ph\":\"C\",\"name\":");
        push_json_str(&mut self.line, &name);
        let _ = write!(self.line, ",\"pid\":{pid},\"ts\":");
        push_us(&mut self.line, ts);
        let v = if value.is_finite() { value } else { 0.0 };
        let _ = write!(self.line, ",\"args\":{{\"value\":{v}}}}}");
        self.flush_line(out)
    }

    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(b"\n]}\n")
    }

    fn signed_time(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_are_exact_nanoseconds() {
        let mut s = String::new();
        push_us(&mut s, 1_234_567);
        s.push(' ');
        push_us(&mut s, -5);
        assert_eq!(s, "1234.567 -0.005");
        let mut j = String::new();
        push_json_str(&mut j, "a\"b\\\n\u{1}");
        assert_eq!(j, "\"a\\\"b\\\\\\n\\u0001\"");
    }
}
