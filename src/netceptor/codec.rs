//! Netceptor messages: the bytes carried whole by every backend (docs/wire.md §4–§7).
//!
//! Decoding checks every length and never panics; encoding produces exactly
//! what a Go node emits (field order, compact JSON, `1` rather than `1.0`).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use serde::{Deserialize, Serialize};

pub const MSG_DATA: u8 = 0;
pub const MSG_ROUTE: u8 = 1;
pub const MSG_SERVICE_AD: u8 = 2;
pub const MSG_REJECT: u8 = 3;

/// Byte ranges of a data message's fixed header: the one source of the
/// layout, for encoding, decoding and rewriting the hop count in place.
mod field {
    use std::ops::Range;

    pub const TYPE: usize = 0;
    pub const HOPS_TO_LIVE: usize = 1;
    // Bytes 2..4 are zero padding.
    pub const FROM_NODE: Range<usize> = 4..12;
    pub const TO_NODE: Range<usize> = 12..20;
    pub const FROM_SERVICE: Range<usize> = 20..28;
    pub const TO_SERVICE: Range<usize> = 28..36;
    pub const PAYLOAD: usize = TO_SERVICE.end;
}

/// Size of the fixed data-message header.
pub const DATA_HEADER_LEN: usize = field::PAYLOAD;
/// Largest message a 2-byte length prefix can carry.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;
/// The whole reject message: type byte and an empty JSON list.
pub const REJECT_MESSAGE: &[u8] = b"\x03[]";

/// A service name: at most 8 bytes, NUL-padded on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceName {
    bytes: [u8; 8],
    len: u8,
}

impl ServiceName {
    /// Fails for names longer than 8 bytes ("service name too long" in Go).
    pub fn new(name: &str) -> Result<Self, DecodeError> {
        Self::from_bytes(name.as_bytes()).ok_or(DecodeError::ServiceNameTooLong)
    }

    fn from_bytes(raw: &[u8]) -> Option<Self> {
        if raw.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(ServiceName {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// Decodes a wire field, stripping only trailing NULs.
    fn from_wire(field: &[u8; 8]) -> Self {
        let len = field.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        ServiceName {
            bytes: *field,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The name as text; non-UTF-8 bytes are shown lossily.
    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    fn wire(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..self.len as usize].copy_from_slice(self.as_bytes());
        out
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The fixed header of a data message; the payload follows it in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub hops_to_live: u8,
    pub from_node: u64,
    pub to_node: u64,
    pub from_service: ServiceName,
    pub to_service: ServiceName,
}

impl DataHeader {
    /// Builds a complete data message: header then payload.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATA_HEADER_LEN + payload.len());
        out.resize(DATA_HEADER_LEN, 0);
        out[field::TYPE] = MSG_DATA;
        out[field::HOPS_TO_LIVE] = self.hops_to_live;
        out[field::FROM_NODE].copy_from_slice(&self.from_node.to_be_bytes());
        out[field::TO_NODE].copy_from_slice(&self.to_node.to_be_bytes());
        out[field::FROM_SERVICE].copy_from_slice(&self.from_service.wire());
        out[field::TO_SERVICE].copy_from_slice(&self.to_service.wire());
        out.extend_from_slice(payload);
        out
    }

    fn decode(msg: &[u8]) -> Result<Self, DecodeError> {
        let head: &[u8; DATA_HEADER_LEN] = msg
            .get(..DATA_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::ShortDataMessage(msg.len()))?;
        // The length is checked once above, so these slices cannot fail.
        let eight = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[r]);
            b
        };
        Ok(DataHeader {
            hops_to_live: head[field::HOPS_TO_LIVE],
            from_node: u64::from_be_bytes(eight(field::FROM_NODE)),
            to_node: u64::from_be_bytes(eight(field::TO_NODE)),
            from_service: ServiceName::from_wire(&eight(field::FROM_SERVICE)),
            to_service: ServiceName::from_wire(&eight(field::TO_SERVICE)),
        })
    }
}

/// Rewrites the hop budget of an encoded data message in place, so a relay
/// forwards the frame it received without re-encoding it. A message too
/// short to be data is left alone (decoding already refused it).
pub fn set_hops_to_live(msg: &mut [u8], hops: u8) {
    if msg.len() >= DATA_HEADER_LEN {
        msg[field::HOPS_TO_LIVE] = hops;
    }
}

/// A routing update (type 1); field order is the Go struct's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingUpdate {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "UpdateID")]
    pub update_id: String,
    pub update_epoch: u64,
    pub update_sequence: u64,
    #[serde(with = "cost_map")]
    pub connections: BTreeMap<String, f64>,
    pub forwarding_node: String,
    pub suspected_duplicate: u64,
}

/// One entry of an advertisement's work type list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCommand {
    #[serde(rename = "WorkType")]
    pub work_type: String,
    #[serde(rename = "Secure")]
    pub secure: bool,
}

/// A service advertisement (type 2). `time` stays in its RFC 3339 text form
/// so that re-flooding forwards exactly what the originator sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceAdvertisement {
    #[serde(rename = "NodeID")]
    pub node_id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Time")]
    pub time: String,
    #[serde(rename = "ConnType")]
    pub conn_type: u8,
    #[serde(rename = "Tags")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "WorkCommands")]
    pub work_commands: Option<Vec<WorkCommand>>,
    #[serde(rename = "Cancel", default)]
    pub cancel: bool,
}

/// The payload of an `unreach` data message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableMessage {
    #[serde(rename = "FromNode")]
    pub from_node: String,
    #[serde(rename = "ToNode")]
    pub to_node: String,
    #[serde(rename = "FromService")]
    pub from_service: String,
    #[serde(rename = "ToService")]
    pub to_service: String,
    #[serde(rename = "Problem")]
    pub problem: String,
}

/// A decoded message. Data messages are returned as a header; the payload is
/// `&frame[DATA_HEADER_LEN..]`, left in place so forwarding needs no copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Data(DataHeader),
    Routing(RoutingUpdate),
    ServiceAd(ServiceAdvertisement),
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    ShortDataMessage(usize),
    BadJson { kind: &'static str, error: String },
    UnknownType(u8),
    ServiceNameTooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty message"),
            DecodeError::ShortDataMessage(n) => {
                write!(
                    f,
                    "data message too short: {n} bytes, need {DATA_HEADER_LEN}"
                )
            }
            DecodeError::BadJson { kind, error } => write!(f, "malformed {kind}: {error}"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::ServiceNameTooLong => f.write_str("service name too long"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub fn decode(msg: &[u8]) -> Result<Message, DecodeError> {
    let (&kind, body) = msg.split_first().ok_or(DecodeError::Empty)?;
    match kind {
        MSG_DATA => DataHeader::decode(msg).map(Message::Data),
        MSG_ROUTE => json(body, "routing update").map(Message::Routing),
        MSG_SERVICE_AD => json(body, "service advertisement").map(Message::ServiceAd),
        // Go sends `[]`; the body carries nothing, so any body is a reject.
        MSG_REJECT => Ok(Message::Reject),
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn json<T: for<'de> Deserialize<'de>>(body: &[u8], kind: &'static str) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::BadJson {
        kind,
        error: e.to_string(),
    })
}

/// Encodes a JSON-bodied message (types 1 and 2).
pub fn encode_json<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
    let mut out = vec![kind];
    // Serialising our own plain structs into a Vec cannot fail.
    serde_json::to_writer(&mut out, body).expect("JSON of a plain struct");
    out
}

pub fn encode_routing(update: &RoutingUpdate) -> Vec<u8> {
    encode_json(MSG_ROUTE, update)
}

pub fn encode_service_ad(ad: &ServiceAdvertisement) -> Vec<u8> {
    encode_json(MSG_SERVICE_AD, ad)
}

/// A routing update as it arrived, to be flooded on with another node as
/// forwarder: the rest of the message is kept as the sender's buffer,
/// which every node the sender flooded it to shares, and the new
/// forwarder's ID is spliced in only when the message is sent. In a mass
/// start a node holds nearly every update of a round before it sends them,
/// and each encoded anew with its own ID was a copy of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Forwardable {
    msg: Bytes,
    /// Where the sender's ID (a JSON string) sits in `msg`.
    forwarder: Range<u32>,
}

impl Forwardable {
    /// `msg`, decoded as `ru`, if it is byte for byte what
    /// [`encode_routing`] makes of `ru`: then splicing in another forwarder
    /// gives what encoding with that forwarder would. (Go's updates are; a
    /// sender that spaces or orders its JSON otherwise is not, and its
    /// updates must be encoded anew.)
    pub fn new(msg: Bytes, ru: &RoutingUpdate) -> Option<Forwardable> {
        if encode_routing(ru) != msg {
            return None;
        }
        // Field order is fixed: the forwarder's ID comes last but for the
        // suspected duplicate, a number.
        // Both are checked, so a field added after them one day makes
        // every update encoded anew rather than spliced at a wrong place.
        let tail = format!(",\"SuspectedDuplicate\":{}}}", ru.suspected_duplicate);
        let id = json_string(&ru.forwarding_node);
        let end = msg.len().checked_sub(tail.len())?;
        let start = end.checked_sub(id.len())?;
        if !msg.ends_with(tail.as_bytes()) || msg[start..end] != id[..] {
            return None;
        }
        let forwarder = u32::try_from(start).ok()?..u32::try_from(end).ok()?;
        Some(Forwardable { msg, forwarder })
    }

    /// The message's length with `forwarder` (a JSON string) in it.
    pub fn len_with(&self, forwarder: &[u8]) -> usize {
        self.msg.len() - self.forwarder.len() + forwarder.len()
    }

    /// The message as `forwarder` (a JSON string) sends it on.
    pub fn with_forwarder(&self, forwarder: &[u8]) -> Bytes {
        let (start, end) = (self.forwarder.start as usize, self.forwarder.end as usize);
        let mut out = Vec::with_capacity(self.len_with(forwarder));
        out.extend_from_slice(&self.msg[..start]);
        out.extend_from_slice(forwarder);
        out.extend_from_slice(&self.msg[end..]);
        out.into()
    }
}

/// `s` as a JSON string, as it appears in our messages.
pub fn json_string(s: &str) -> Vec<u8> {
    // Serialising a string into a Vec cannot fail.
    serde_json::to_vec(s).expect("JSON of a string")
}

/// Costs are float64 in Go and print without a fractional part when they
/// have none (`1`, not `1.0`).
pub mod cost_map {
    use super::*;
    use serde::Serializer;
    use serde::ser::SerializeMap;

    pub fn serialize<S: Serializer>(map: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(k, &GoFloat(*v))?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        // Go emits `null` for a nil map.
        Ok(Option::<BTreeMap<String, f64>>::deserialize(d)?.unwrap_or_default())
    }
}

/// An f64 serialised the way Go's encoding/json prints float64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoFloat(pub f64);

impl Serialize for GoFloat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.fract() == 0.0 && v.abs() < 1e15 {
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

/// Splits 2-byte little-endian length-prefixed frames out of a byte stream.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// Appends bytes read from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's message, if one has arrived.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let pending = &self.buf[self.start..];
        let len = u16::from_le_bytes([*pending.first()?, *pending.get(1)?]) as usize;
        let msg = pending.get(2..2 + len)?.to_vec();
        self.start += 2 + len;
        if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Some(msg)
    }
}

/// Why a message cannot be framed.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    Empty,
    TooLong(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("refusing to send an empty message"),
            FrameError::TooLong(n) => write!(f, "message of {n} bytes exceeds {MAX_MESSAGE_LEN}"),
        }
    }
}

/// Appends one length-prefixed frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), FrameError> {
    if msg.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u16::try_from(msg.len()).map_err(|_| FrameError::TooLong(msg.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/frames.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The Go daemon's captured routing updates (at least 8): name, the
    /// message's bytes and what they decode to.
    fn go_routing_updates() -> Vec<(String, Vec<u8>, RoutingUpdate)> {
        let v = vectors();
        let updates: Vec<_> = (v["vectors"].as_object().unwrap().iter())
            .filter(|(name, _)| name.starts_with("routing_update"))
            .map(|(name, vec)| {
                let msg = hex(vec["message_hex"].as_str().unwrap());
                let Message::Routing(ru) = decode(&msg).unwrap() else {
                    panic!("{name} did not decode as routing update");
                };
                (name.clone(), msg, ru)
            })
            .collect();
        assert!(updates.len() >= 8);
        updates
    }

    #[test]
    fn go_routing_updates_round_trip_byte_exact() {
        for (name, msg, ru) in go_routing_updates() {
            assert_eq!(encode_routing(&ru), msg, "{name} re-encodes byte-exact");
        }
    }

    #[test]
    fn a_forwarded_update_is_what_encoding_with_the_new_forwarder_makes() {
        for (name, msg, mut ru) in go_routing_updates() {
            let kept = Forwardable::new(msg.into(), &ru).expect("Go's updates are ours");
            for forwarder in ["x", "a-much-longer-node-name", "q\"uote"] {
                let id = json_string(forwarder);
                ru.forwarding_node = forwarder.to_string();
                let encoded = encode_routing(&ru);
                assert_eq!(kept.with_forwarder(&id), encoded, "{name} via {forwarder}");
                assert_eq!(kept.len_with(&id), encoded.len());
            }
        }
    }

    #[test]
    fn an_update_encoded_otherwise_is_not_spliced() {
        let ru = RoutingUpdate {
            node_id: "a".into(),
            update_id: "u1".into(),
            update_epoch: 1,
            update_sequence: 2,
            connections: BTreeMap::from([("b".to_string(), 1.0)]),
            forwarding_node: "b".into(),
            suspected_duplicate: 0,
        };
        let ours = encode_routing(&ru);
        assert!(Forwardable::new(ours.clone().into(), &ru).is_some());
        let spaced = String::from_utf8(ours).unwrap().replace(',', ", ");
        let Message::Routing(decoded) = decode(spaced.as_bytes()).unwrap() else {
            panic!("spaced JSON is still an update");
        };
        assert_eq!(decoded, ru);
        assert_eq!(Forwardable::new(spaced.into(), &ru), None);
    }

    #[test]
    fn go_service_ads_round_trip_byte_exact() {
        let v = vectors();
        for name in [
            "service_advertisement_control_node1",
            "service_advertisement_control_node2",
        ] {
            let msg = hex(v["vectors"][name]["message_hex"].as_str().unwrap());
            let Message::ServiceAd(ad) = decode(&msg).unwrap() else {
                panic!("{name} is not an ad");
            };
            assert_eq!(ad.service, "control");
            assert_eq!(ad.tags.as_ref().unwrap()["type"], "Control Service");
            assert_eq!(encode_service_ad(&ad), msg, "{name}");
        }
    }

    #[test]
    fn go_data_messages_decode_and_re_encode() {
        let v = vectors();
        for name in [
            "ping_request",
            "ping_reply",
            "traceroute_hop1_request",
            "unreachable_service_unknown",
        ] {
            let msg = hex(v["vectors"][name]["message_hex"].as_str().unwrap());
            let Message::Data(h) = decode(&msg).unwrap() else {
                panic!("{name} is not data");
            };
            assert_eq!(h.encode(&msg[DATA_HEADER_LEN..]), msg, "{name}");
        }
        let msg = hex(v["vectors"]["ping_request"]["message_hex"]
            .as_str()
            .unwrap());
        let Message::Data(h) = decode(&msg).unwrap() else {
            unreachable!()
        };
        assert_eq!(h.to_service.as_bytes(), b"ping");
        assert_eq!(h.hops_to_live, 29);
    }

    #[test]
    fn go_unreachable_payload_parses() {
        let v = vectors();
        let msg = hex(v["vectors"]["unreachable_service_unknown"]["message_hex"]
            .as_str()
            .unwrap());
        let u: UnreachableMessage = serde_json::from_slice(&msg[DATA_HEADER_LEN..]).unwrap();
        assert_eq!(u.problem, "service unknown");
        assert_eq!(serde_json::to_vec(&u).unwrap(), &msg[DATA_HEADER_LEN..]);
    }

    #[test]
    fn reject_vectors() {
        let v = vectors();
        for name in [
            "reject_from_listener_duplicate_id",
            "reject_from_dialer_own_id",
        ] {
            let msg = hex(v["vectors"][name]["message_hex"].as_str().unwrap());
            assert_eq!(msg, REJECT_MESSAGE);
            assert_eq!(decode(&msg).unwrap(), Message::Reject);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[0; 35]), Err(DecodeError::ShortDataMessage(35)));
        assert_eq!(decode(&[9, 1, 2]), Err(DecodeError::UnknownType(9)));
        assert!(matches!(
            decode(b"\x01{\"NodeID\":"),
            Err(DecodeError::BadJson { .. })
        ));
        assert!(matches!(
            decode(b"\x02[1,2]"),
            Err(DecodeError::BadJson { .. })
        ));
        // An epoch beyond 2^53 must survive exactly.
        let ru = b"\x01{\"NodeID\":\"a\",\"UpdateID\":\"x\",\"UpdateEpoch\":30121749543684607,\"UpdateSequence\":1,\"Connections\":null,\"ForwardingNode\":\"a\",\"SuspectedDuplicate\":0}";
        let Ok(Message::Routing(r)) = decode(ru) else {
            panic!()
        };
        assert_eq!(r.update_epoch, 30121749543684607);
        assert!(r.connections.is_empty());
    }

    #[test]
    fn service_names() {
        assert!(ServiceName::new("123456789").is_err());
        let s = ServiceName::new("ping").unwrap();
        let h = DataHeader {
            hops_to_live: 3,
            from_node: 1,
            to_node: 2,
            from_service: s,
            to_service: ServiceName::new("").unwrap(),
        };
        let Ok(Message::Data(back)) = decode(&h.encode(b"xyz")) else {
            panic!()
        };
        assert_eq!(back, h);
    }

    #[test]
    fn frames_split_on_every_prefix() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"\x01hello").unwrap();
        write_frame(&mut wire, REJECT_MESSAGE).unwrap();
        for cut in 0..=wire.len() {
            let mut r = FrameReader::default();
            r.push(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = r.next_frame() {
                got.push(f);
            }
            r.push(&wire[cut..]);
            while let Some(f) = r.next_frame() {
                got.push(f);
            }
            assert_eq!(got, vec![b"\x01hello".to_vec(), REJECT_MESSAGE.to_vec()]);
        }
    }

    #[test]
    fn frame_limits() {
        let mut out = Vec::new();
        assert_eq!(write_frame(&mut out, &[]), Err(FrameError::Empty));
        assert_eq!(
            write_frame(&mut out, &vec![1; 65536]),
            Err(FrameError::TooLong(65536))
        );
        assert!(write_frame(&mut out, &vec![1; 65535]).is_ok());
    }

    /// The fuzz target's body over pseudo-random inputs, so CI checks it
    /// too (`cargo fuzz run codec` explores far more).
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = data.first_mut() {
                *first %= 5;
            }
            let _ = decode(&data);
            let mut frames = FrameReader::default();
            frames.push(&data);
            while let Some(msg) = frames.next_frame() {
                let _ = decode(&msg);
            }
        }
    }

    #[test]
    fn go_floats() {
        let s = |v| serde_json::to_string(&GoFloat(v)).unwrap();
        assert_eq!(s(1.0), "1");
        assert_eq!(s(2.5), "2.5");
        assert_eq!(s(100.0), "100");
    }
}
