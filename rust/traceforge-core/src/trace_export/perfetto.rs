//! The Perfetto protobuf sink: one `TracePacket` per track descriptor, slice begin, slice end and counter
//! sample, all on one trusted packet sequence whose event and category names are interned (each name's
//! text is written once, in the packet that first uses it; the rest carry its iid).
use std::collections::HashMap;
use std::io::Write;

use super::proto::{event, interned, packet, put_varint, track, Msg, TRACE_PACKET};
use super::{Sink, TrackInfo};

/// The one packet sequence of the file.
const SEQUENCE_ID: u64 = 1;

#[derive(Default)]
pub(super) struct PerfettoSink {
    names: HashMap<String, u64>,
    started: bool,
    // Scratch buffers reused for every packet: no allocation per event.
    event: Msg,
    interned: Msg,
    entry: Msg,
    packet: Msg,
    frame: Vec<u8>,
}

impl PerfettoSink {
    /// The packet's sequence fields; the first packet clears the incremental state (interned names).
    fn sequence(&mut self, needs_state: bool) {
        self.packet.varint(packet::TRUSTED_PACKET_SEQUENCE_ID, SEQUENCE_ID);
        let mut flags = if needs_state { packet::SEQ_NEEDS_STATE } else { 0 };
        if !self.started {
            flags |= packet::SEQ_CLEARED;
            self.started = true;
        }
        if flags != 0 {
            self.packet.varint(packet::SEQUENCE_FLAGS, flags);
        }
    }

    /// The iid of `name`, adding an `EventName` entry to `self.interned` when it is new.
    fn name_iid(&mut self, name: &str) -> u64 {
        if let Some(&iid) = self.names.get(name) {
            return iid;
        }
        let iid = self.names.len() as u64 + 1;
        self.names.insert(name.to_owned(), iid);
        self.entry.clear();
        self.entry.varint(interned::IID, iid).string(interned::NAME, name);
        self.interned.msg(interned::EVENT_NAMES, &self.entry);
        iid
    }

    fn emit(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.frame.clear();
        put_varint(&mut self.frame, (u64::from(TRACE_PACKET) << 3) | 2);
        put_varint(&mut self.frame, self.packet.buf.len() as u64);
        out.write_all(&self.frame)?;
        out.write_all(&self.packet.buf)
    }

    /// One `TrackEvent` packet at `ts`: `self.event` holds the event's fields.
    fn event_packet(&mut self, out: &mut dyn Write, ts: i64) -> std::io::Result<()> {
        self.packet.clear();
        self.packet.varint(packet::TIMESTAMP, ts as u64);
        self.sequence(true);
        if !self.interned.buf.is_empty() {
            self.packet.msg(packet::INTERNED_DATA, &self.interned);
            self.interned.clear();
        }
        self.packet.msg(packet::TRACK_EVENT, &self.event);
        self.emit(out)
    }
}

impl Sink for PerfettoSink {
    fn track(&mut self, out: &mut dyn Write, t: &TrackInfo) -> std::io::Result<()> {
        let mut d = Msg::default();
        d.varint(track::UUID, t.uuid);
        if let Some(p) = t.parent {
            d.varint(track::PARENT_UUID, p);
        }
        match (t.pid, t.tid) {
            (Some(pid), Some(tid)) => {
                let mut th = Msg::default();
                th.int(track::THREAD_PID, pid).int(track::THREAD_TID, tid).string(track::THREAD_NAME, &t.name);
                d.msg(track::THREAD, &th);
            }
            (Some(pid), None) => {
                let mut pr = Msg::default();
                pr.int(track::PROCESS_PID, pid).string(track::PROCESS_NAME, &t.name);
                d.msg(track::PROCESS, &pr);
            }
            _ => {}
        }
        // A named track keeps its name even under a process or thread (the UI would otherwise show the
        // descriptor's pid/tid only).
        d.string(track::NAME, &t.name);
        if t.counter {
            let mut c = Msg::default();
            if let Some(unit) = &t.unit {
                c.string(track::COUNTER_UNIT_NAME, unit);
            }
            d.msg(track::COUNTER, &c);
        }
        d.varint(track::CHILD_ORDERING, track::CHILD_ORDERING_EXPLICIT);
        d.int(track::SIBLING_ORDER_RANK, t.rank);
        self.packet.clear();
        self.sequence(false);
        self.packet.msg(packet::TRACK_DESCRIPTOR, &d);
        self.emit(out)
    }

    fn slice(
        &mut self,
        out: &mut dyn Write,
        track_uuid: u64,
        start: i64,
        end: i64,
        name: &str,
        flow_out: Option<u64>,
        flow_in: Option<u64>,
    ) -> std::io::Result<()> {
        let iid = self.name_iid(name);
        self.event.clear();
        self.event.varint(event::TYPE, event::TYPE_SLICE_BEGIN).varint(event::TRACK_UUID, track_uuid);
        self.event.varint(event::NAME_IID, iid);
        // One flow id per launch: the API call and each piece of its GPU work carry it, so the UI draws
        // launch -> first GPU op -> next op of the same launch.
        for id in flow_out.iter().chain(flow_in.iter()) {
            self.event.fixed64(event::FLOW_IDS, *id);
        }
        self.event_packet(out, start)?;
        self.event.clear();
        self.event.varint(event::TYPE, event::TYPE_SLICE_END).varint(event::TRACK_UUID, track_uuid);
        self.event_packet(out, end)
    }

    fn counter(&mut self, out: &mut dyn Write, track_uuid: u64, ts: i64, value: f64) -> std::io::Result<()> {
        self.event.clear();
        self.event.varint(event::TYPE, event::TYPE_COUNTER).varint(event::TRACK_UUID, track_uuid);
        self.event.double(event::COUNTER_VALUE_DOUBLE, value);
        self.event_packet(out, ts)
    }

    fn finish(&mut self, _out: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn signed_time(&self) -> bool {
        false
    }
}
