//! The protobuf wire format of Perfetto's `Trace` / `TracePacket` / `TrackEvent`, written by hand.
//!
//! Field numbers are those of `protos/perfetto/trace/perfetto_trace.proto` (the same definitions the
//! `perfetto` Python package compiles into `perfetto_trace_pb2`, which the tests parse the output with).
//! Only the handful of messages a timeline needs are encoded; a generated encoder (prost) would add a
//! build-time protoc dependency for ~150 lines of varints.

/// `Trace.packet` (repeated TracePacket).
pub const TRACE_PACKET: u32 = 1;

/// Fields of `TracePacket`.
pub mod packet {
    pub const TIMESTAMP: u32 = 8;
    pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
    pub const TRACK_EVENT: u32 = 11;
    pub const INTERNED_DATA: u32 = 12;
    pub const SEQUENCE_FLAGS: u32 = 13;
    pub const TRACK_DESCRIPTOR: u32 = 60;
    /// `SEQ_INCREMENTAL_STATE_CLEARED`
    pub const SEQ_CLEARED: u64 = 1;
    /// `SEQ_NEEDS_INCREMENTAL_STATE`
    pub const SEQ_NEEDS_STATE: u64 = 2;
}

/// Fields of `TrackEvent`.
pub mod event {
    pub const TYPE: u32 = 9;
    pub const NAME_IID: u32 = 10;
    pub const TRACK_UUID: u32 = 11;
    pub const COUNTER_VALUE_DOUBLE: u32 = 44;
    pub const FLOW_IDS: u32 = 47;
    pub const TYPE_SLICE_BEGIN: u64 = 1;
    pub const TYPE_SLICE_END: u64 = 2;
    pub const TYPE_COUNTER: u64 = 4;
}

/// Fields of `InternedData` and its `EventName` entries (`iid` = 1, `name` = 2).
pub mod interned {
    pub const EVENT_NAMES: u32 = 2;
    pub const IID: u32 = 1;
    pub const NAME: u32 = 2;
}

/// Fields of `TrackDescriptor`, `ProcessDescriptor`, `ThreadDescriptor`, `CounterDescriptor`.
pub mod track {
    pub const UUID: u32 = 1;
    pub const NAME: u32 = 2;
    pub const PROCESS: u32 = 3;
    pub const THREAD: u32 = 4;
    pub const PARENT_UUID: u32 = 5;
    pub const COUNTER: u32 = 8;
    /// `child_ordering` (`EXPLICIT` = 3) and `sibling_order_rank`
    pub const CHILD_ORDERING: u32 = 11;
    pub const SIBLING_ORDER_RANK: u32 = 12;
    pub const CHILD_ORDERING_EXPLICIT: u64 = 3;
    pub const PROCESS_PID: u32 = 1;
    pub const PROCESS_NAME: u32 = 6;
    pub const THREAD_PID: u32 = 1;
    pub const THREAD_TID: u32 = 2;
    pub const THREAD_NAME: u32 = 5;
    pub const COUNTER_UNIT_NAME: u32 = 6;
}

const WIRE_VARINT: u32 = 0;
const WIRE_I64: u32 = 1;
const WIRE_LEN: u32 = 2;

/// A protobuf message being built in a byte buffer.
#[derive(Default)]
pub struct Msg {
    pub buf: Vec<u8>,
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn tag(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// A varint field (uint64, uint32, enum, bool; int32/int64 as two's complement).
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, WIRE_VARINT);
        put_varint(&mut self.buf, v);
        self
    }

    /// An `int64`/`int32` field (negative values as ten-byte two's complement, as protobuf does).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.varint(field, v as u64)
    }

    pub fn fixed64(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, WIRE_I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.fixed64(field, v.to_bits())
    }

    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.tag(field, WIRE_LEN);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// An embedded message.
    pub fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_encoding() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xAC, 0x02]);
        let mut m = Msg::default();
        m.int(1, -1);
        assert_eq!(m.buf.len(), 11); // tag + ten bytes, as protobuf encodes a negative int64
        let mut m = Msg::default();
        m.string(2, "hi");
        assert_eq!(m.buf, [0x12, 2, b'h', b'i']);
    }
}
