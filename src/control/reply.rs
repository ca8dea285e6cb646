//! Reply bodies, formatted as the Go daemon formats them: top-level keys
//! sorted, struct-derived objects in field order, costs as Go floats.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::gotime::duration_string;
use crate::netceptor::codec::{GoFloat, WorkCommand};
use crate::netceptor::node::StatusSnapshot;
use crate::netceptor::ping::Probe;
use crate::work::Completion;

/// The daemon's version as `status` reports it.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// An advertisement as `status` shows it: the wire object without `Cancel`.
#[derive(Serialize)]
struct AdView<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "Service")]
    service: &'a str,
    #[serde(rename = "Time")]
    time: &'a str,
    #[serde(rename = "ConnType")]
    conn_type: u8,
    #[serde(rename = "Tags")]
    tags: &'a Option<BTreeMap<String, String>>,
    #[serde(rename = "WorkCommands")]
    work_commands: &'a Option<Vec<WorkCommand>>,
}

#[derive(Serialize)]
struct ConnView<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "Cost")]
    cost: GoFloat,
}

/// Facts about the host that `status` includes.
pub struct HostInfo {
    pub cpu_count: usize,
    pub memory_mib: u64,
}

impl HostInfo {
    pub fn read() -> HostInfo {
        HostInfo {
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: memory_total_kib().unwrap_or(0) / 1024,
        }
    }
}

fn memory_total_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `status` reply; `fields` limits it to the named keys.
pub fn status(st: &StatusSnapshot, host: &HostInfo, fields: Option<&[String]>) -> String {
    let wanted = |k: &str| fields.is_none_or(|f| f.iter().any(|x| x == k));
    // Keys in sorted order, as Go marshals a map.
    let mut parts: Vec<(&str, String)> = Vec::new();
    if wanted("Advertisements") {
        let ads: Vec<AdView> = st
            .advertisements
            .iter()
            .map(|a| AdView {
                node_id: &a.node_id,
                service: &a.service,
                time: &a.time,
                conn_type: a.conn_type,
                tags: &a.tags,
                work_commands: &a.work_commands,
            })
            .collect();
        parts.push(("Advertisements", to_json(&ads)));
    }
    if wanted("Connections") {
        let conns: Vec<ConnView> = st
            .connections
            .iter()
            .map(|(n, c)| ConnView {
                node_id: n,
                cost: GoFloat(*c),
            })
            .collect();
        parts.push(("Connections", to_json(&conns)));
    }
    if wanted("KnownConnectionCosts") {
        let costs: BTreeMap<&String, BTreeMap<&String, GoFloat>> = st
            .known_connection_costs
            .iter()
            .map(|(n, edges)| (n, edges.iter().map(|(p, c)| (p, GoFloat(*c))).collect()))
            .collect();
        parts.push(("KnownConnectionCosts", to_json(&costs)));
    }
    let scalars: [(&str, Value); 5] = [
        ("NodeID", st.node_id.clone().into()),
        (
            "RoutingTable",
            serde_json::to_value(&st.routing_table).unwrap_or_default(),
        ),
        ("SystemCPUCount", host.cpu_count.into()),
        ("SystemMemoryMiB", host.memory_mib.into()),
        ("Version", VERSION.into()),
    ];
    for (k, v) in scalars {
        if wanted(k) {
            parts.push((k, v.to_string()));
        }
    }
    object(&parts)
}

/// `{"From":…,"Success":true,"Time":ns,"TimeStr":…}` or `{"Error":…,"Success":false}`.
pub fn ping(probe: &Probe) -> String {
    let v = match &probe.error {
        None => serde_json::json!({
            "From": probe.from,
            "Success": true,
            "Time": probe.rtt.as_nanos() as u64,
            "TimeStr": duration_string(probe.rtt),
        }),
        Some(e) => serde_json::json!({"Error": e, "Success": false}),
    };
    v.to_string()
}

/// Hops keyed `"0"`, `"1"`, …; a failed hop adds `Error`.
pub fn traceroute(hops: &[Probe]) -> String {
    let map: serde_json::Map<String, Value> = hops
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut hop = serde_json::json!({
                "From": p.from,
                "Time": p.rtt.as_nanos() as u64,
                "TimeStr": duration_string(p.rtt),
            });
            if let Some(e) = &p.error {
                hop["Error"] = e.clone().into();
            }
            (i.to_string(), hop)
        })
        .collect();
    Value::Object(map).to_string()
}

/// `{"cancelled":id}`, or `{"cancel pending":id}` while the executor has
/// not been told yet.
pub fn cancelled(c: Completion, unit: &str) -> String {
    keyed(pick(c, "cancelled", "cancel pending"), unit)
}

/// `{"released":id}` or `{"release pending":id}`.
pub fn released(c: Completion, unit: &str) -> String {
    keyed(pick(c, "released", "release pending"), unit)
}

#[derive(Serialize)]
struct Submitted<'a> {
    result: &'a str,
    unitid: &'a str,
}

/// The last line of a `work submit`: `Job Started`, or `Job Submitted` when
/// the executor is not reachable yet.
pub fn submitted(c: Completion, unit: &str) -> String {
    to_json(&Submitted {
        result: pick(c, "Job Started", "Job Submitted"),
        unitid: unit,
    })
}

fn pick<'a>(c: Completion, done: &'a str, pending: &'a str) -> &'a str {
    match c {
        Completion::Done => done,
        Completion::Pending => pending,
    }
}

fn keyed(key: &str, unit: &str) -> String {
    to_json(&BTreeMap::from([(key, unit)]))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn object(parts: &[(&str, String)]) -> String {
    let body: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netceptor::codec::ServiceAdvertisement;
    use std::time::Duration;

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            node_id: "node1".into(),
            connections: vec![("node2".into(), 1.0)],
            routing_table: BTreeMap::from([("node2".into(), "node2".into())]),
            advertisements: vec![ServiceAdvertisement {
                node_id: "node2".into(),
                service: "control".into(),
                time: "2026-11-23T01:12:24.448745035Z".into(),
                conn_type: 1,
                tags: Some(BTreeMap::from([("type".into(), "Control Service".into())])),
                work_commands: Some(vec![WorkCommand {
                    work_type: "demo".into(),
                    secure: false,
                }]),
                cancel: false,
            }],
            known_connection_costs: BTreeMap::from([
                ("node1".into(), BTreeMap::from([("node2".into(), 1.0)])),
                ("node2".into(), BTreeMap::from([("node1".into(), 1.0)])),
            ]),
        }
    }

    #[test]
    fn status_matches_go_shape() {
        let host = HostInfo {
            cpu_count: 2,
            memory_mib: 24105,
        };
        let got = status(&snapshot(), &host, None);
        let want = format!(
            "{{\"Advertisements\":[{{\"NodeID\":\"node2\",\"Service\":\"control\",\"Time\":\"2026-11-23T01:12:24.448745035Z\",\"ConnType\":1,\"Tags\":{{\"type\":\"Control Service\"}},\"WorkCommands\":[{{\"WorkType\":\"demo\",\"Secure\":false}}]}}],\"Connections\":[{{\"NodeID\":\"node2\",\"Cost\":1}}],\"KnownConnectionCosts\":{{\"node1\":{{\"node2\":1}},\"node2\":{{\"node1\":1}}}},\"NodeID\":\"node1\",\"RoutingTable\":{{\"node2\":\"node2\"}},\"SystemCPUCount\":2,\"SystemMemoryMiB\":24105,\"Version\":\"{VERSION}\"}}"
        );
        assert_eq!(got, want);
        let fields = ["NodeID".to_string(), "Connections".into(), "Bogus".into()];
        assert_eq!(
            status(&snapshot(), &host, Some(&fields)),
            r#"{"Connections":[{"NodeID":"node2","Cost":1}],"NodeID":"node1"}"#
        );
        assert_eq!(status(&snapshot(), &host, Some(&[])), "{}");
    }

    #[test]
    fn work_outcome_replies() {
        // Go's replies (tests/vectors control transcripts).
        assert_eq!(
            cancelled(Completion::Done, "wGlE8qSq"),
            r#"{"cancelled":"wGlE8qSq"}"#
        );
        assert_eq!(
            cancelled(Completion::Pending, "x"),
            r#"{"cancel pending":"x"}"#
        );
        assert_eq!(
            released(Completion::Done, "2e6IeY3q"),
            r#"{"released":"2e6IeY3q"}"#
        );
        assert_eq!(
            released(Completion::Pending, "x"),
            r#"{"release pending":"x"}"#
        );
        assert_eq!(
            submitted(Completion::Done, "3EcpOkRH"),
            r#"{"result":"Job Started","unitid":"3EcpOkRH"}"#
        );
        assert_eq!(
            submitted(Completion::Pending, "x"),
            r#"{"result":"Job Submitted","unitid":"x"}"#
        );
    }

    #[test]
    fn ping_and_traceroute_replies() {
        let ok = Probe {
            from: "node2".into(),
            rtt: Duration::from_nanos(315_561),
            error: None,
        };
        assert_eq!(
            ping(&ok),
            "{\"From\":\"node2\",\"Success\":true,\"Time\":315561,\"TimeStr\":\"315.561µs\"}"
        );
        let failed = Probe {
            from: String::new(),
            rtt: Duration::from_nanos(10_000_527_289),
            error: Some("timeout".into()),
        };
        assert_eq!(ping(&failed), r#"{"Error":"timeout","Success":false}"#);
        assert_eq!(
            traceroute(&[ok, failed]),
            "{\"0\":{\"From\":\"node2\",\"Time\":315561,\"TimeStr\":\"315.561µs\"},\"1\":{\"Error\":\"timeout\",\"From\":\"\",\"Time\":10000527289,\"TimeStr\":\"10.000527289s\"}}"
        );
    }
}
