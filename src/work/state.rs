//! Unit states and the `status` file, in the Go daemon's JSON shape
//! (docs/work.md §1, §2, §6, §7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const PENDING: i64 = 0;
pub const RUNNING: i64 = 1;
pub const SUCCEEDED: i64 = 2;
pub const FAILED: i64 = 3;
pub const CANCELED: i64 = 4;

pub fn state_name(state: i64) -> String {
    match state {
        PENDING => "Pending".into(),
        RUNNING => "Running".into(),
        SUCCEEDED => "Succeeded".into(),
        FAILED => "Failed".into(),
        CANCELED => "Canceled".into(),
        n => format!("Unknown: {n}"),
    }
}

/// Whether the unit will change no more. Go leaves Canceled out, so its
/// results streams and monitors never end for canceled units; we include it.
pub fn is_final(state: i64) -> bool {
    matches!(state, SUCCEEDED | FAILED | CANCELED)
}

/// The `status` file: fields in Go's order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(rename = "State")]
    pub state: i64,
    #[serde(rename = "Detail")]
    pub detail: String,
    #[serde(rename = "StdoutSize")]
    pub stdout_size: i64,
    #[serde(rename = "WorkType")]
    pub work_type: String,
    #[serde(rename = "ExtraData")]
    pub extra: Option<ExtraData>,
}

impl Status {
    pub fn new(work_type: &str, extra: Option<ExtraData>) -> Status {
        Status {
            state: PENDING,
            detail: "Unit Created".into(),
            stdout_size: 0,
            work_type: work_type.into(),
            extra,
        }
    }

    pub fn is_final(&self) -> bool {
        is_final(self.state)
    }

    pub fn set(&mut self, state: i64, detail: impl Into<String>) {
        self.state = state;
        self.detail = detail.into();
    }

    pub fn remote(&self) -> Option<&RemoteExtra> {
        match &self.extra {
            Some(ExtraData::Remote(r)) => Some(r),
            _ => None,
        }
    }

    pub fn remote_mut(&mut self) -> Option<&mut RemoteExtra> {
        match &mut self.extra {
            Some(ExtraData::Remote(r)) => Some(r),
            _ => None,
        }
    }

    pub fn kube(&self) -> Option<&KubeExtra> {
        match &self.extra {
            Some(ExtraData::Kube(k)) => Some(k),
            _ => None,
        }
    }

    pub fn command(&self) -> Option<&CommandExtra> {
        match &self.extra {
            Some(ExtraData::Command(c)) => Some(c),
            _ => None,
        }
    }

    /// The file's bytes: compact JSON and a newline, as Go writes it.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// What `work status` and `work list` show of this status.
    /// `known_type` is false for units of a work type not configured here,
    /// whose ExtraData Go shows as `"Unknown WorkType"`.
    pub fn view(&self, known_type: bool) -> StatusView<'_> {
        let extra = match &self.extra {
            _ if !known_type => ExtraView::UnknownType("Unknown WorkType"),
            Some(ExtraData::Remote(r)) => ExtraView::Remote(r.without_secrets()),
            other => ExtraView::Stored(other),
        };
        StatusView {
            detail: &self.detail,
            extra,
            state: self.state,
            state_name: state_name(self.state),
            stdout_size: self.stdout_size,
            work_type: &self.work_type,
        }
    }
}

/// A status as the control service shows it (Go's `unitStatusForCFR`):
/// a map there, so its keys come sorted, with `StateName` added.
#[derive(Serialize)]
pub struct StatusView<'a> {
    #[serde(rename = "Detail")]
    detail: &'a str,
    #[serde(rename = "ExtraData")]
    extra: ExtraView<'a>,
    #[serde(rename = "State")]
    state: i64,
    #[serde(rename = "StateName")]
    state_name: String,
    #[serde(rename = "StdoutSize")]
    stdout_size: i64,
    #[serde(rename = "WorkType")]
    work_type: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ExtraView<'a> {
    /// Only this text for a work type not configured here.
    UnknownType(&'static str),
    /// Secret params are left out of replies.
    Remote(RemoteExtra),
    Stored(&'a Option<ExtraData>),
}

/// Work-type specific data; untagged, told apart by their fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraData {
    Command(CommandExtra),
    Remote(RemoteExtra),
    Kube(KubeExtra),
    /// Anything else another implementation stored; kept as it was.
    Other(serde_json::Value),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandExtra {
    #[serde(rename = "Pid")]
    pub pid: i64,
    #[serde(rename = "Params")]
    pub params: String,
}

/// What a controller keeps about a unit it submitted to another node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteExtra {
    #[serde(rename = "RemoteNode")]
    pub remote_node: String,
    #[serde(rename = "RemoteWorkType")]
    pub remote_work_type: String,
    #[serde(rename = "RemoteParams")]
    pub remote_params: BTreeMap<String, String>,
    #[serde(rename = "RemoteUnitID")]
    pub remote_unit_id: String,
    #[serde(rename = "RemoteStarted")]
    pub remote_started: bool,
    #[serde(rename = "LocalCancelled")]
    pub local_cancelled: bool,
    #[serde(rename = "LocalReleased")]
    pub local_released: bool,
    #[serde(rename = "SignWork")]
    pub sign_work: bool,
    #[serde(rename = "TLSClient")]
    pub tls_client: String,
    /// RFC 3339; Go's zero time when there is no expiration.
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

/// A Kubernetes unit (docs/kubernetes.md §3). KubeConfig and KubePod are
/// always empty here: their contents are sealed with the unit's secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KubeExtra {
    #[serde(rename = "Image")]
    pub image: String,
    #[serde(rename = "Command")]
    pub command: String,
    #[serde(rename = "Params")]
    pub params: String,
    #[serde(rename = "KubeNamespace")]
    pub kube_namespace: String,
    #[serde(rename = "KubeConfig")]
    pub kube_config: String,
    #[serde(rename = "KubePod")]
    pub kube_pod: String,
    #[serde(rename = "PodName")]
    pub pod_name: String,
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl RemoteExtra {
    /// A unit for `work_type` on `node` that nothing happened to yet.
    #[cfg(test)]
    pub fn unsent(node: &str, work_type: &str) -> RemoteExtra {
        RemoteExtra {
            remote_node: node.into(),
            remote_work_type: work_type.into(),
            remote_params: BTreeMap::new(),
            remote_unit_id: String::new(),
            remote_started: false,
            local_cancelled: false,
            local_released: false,
            sign_work: false,
            tls_client: String::new(),
            expiration: ZERO_TIME.into(),
        }
    }

    fn without_secrets(&self) -> RemoteExtra {
        let mut r = self.clone();
        r.remote_params
            .retain(|k, _| !k.to_lowercase().starts_with("secret_"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/status-files.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every status file the Go daemon wrote parses and re-encodes to the
    /// same bytes.
    #[test]
    fn go_status_files_round_trip() {
        let v = vectors();
        let mut texts = Vec::new();
        collect_status_texts(&v, &mut texts);
        assert!(texts.len() >= 10, "found {}", texts.len());
        for t in texts {
            let st: Status = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(
                String::from_utf8(st.to_file_bytes()).unwrap(),
                t,
                "re-encoding"
            );
        }
    }

    fn collect_status_texts(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.starts_with("{\"State\":") && s.ends_with("}\n") => {
                out.push(s.clone())
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect_status_texts(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| collect_status_texts(x, out)),
            _ => {}
        }
    }

    fn reply(st: &Status, known_type: bool) -> String {
        serde_json::to_string(&st.view(known_type)).unwrap()
    }

    #[test]
    fn reply_shape_matches_go() {
        let st: Status = serde_json::from_str(
            r#"{"State":0,"Detail":"Waiting for Input Data","StdoutSize":0,"WorkType":"demo","ExtraData":{"Pid":0,"Params":"-c \"cat; sleep 3; echo done\""}}"#,
        )
        .unwrap();
        assert_eq!(
            reply(&st, true),
            r#"{"Detail":"Waiting for Input Data","ExtraData":{"Pid":0,"Params":"-c \"cat; sleep 3; echo done\""},"State":0,"StateName":"Pending","StdoutSize":0,"WorkType":"demo"}"#
        );
        let done = Status {
            state: SUCCEEDED,
            detail: "exit status 0".into(),
            stdout_size: 17,
            work_type: "demo".into(),
            extra: None,
        };
        assert_eq!(
            reply(&done, true),
            r#"{"Detail":"exit status 0","ExtraData":null,"State":2,"StateName":"Succeeded","StdoutSize":17,"WorkType":"demo"}"#
        );
    }

    /// The Go daemon's `work list` reply (control transcript `work_list`):
    /// a remote and a local unit, re-encoded from their own fields.
    #[test]
    fn list_reply_matches_go_bytes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/control-transcripts.json"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let go = v["transcripts"]["work_list"]["exchange"][2]["text"]
            .as_str()
            .unwrap()
            .trim_end();
        let units: BTreeMap<String, serde_json::Value> = serde_json::from_str(go).unwrap();
        let statuses: BTreeMap<&str, Status> = units
            .iter()
            .map(|(id, u)| {
                let mut u = u.clone();
                u.as_object_mut().unwrap().remove("StateName");
                (id.as_str(), serde_json::from_value(u).unwrap())
            })
            .collect();
        let views: BTreeMap<&str, StatusView> = statuses
            .iter()
            .map(|(id, st)| (*id, st.view(true)))
            .collect();
        assert_eq!(serde_json::to_string(&views).unwrap(), go);
    }

    #[test]
    fn units_of_unknown_types_show_it() {
        let st = Status::new(
            "gone",
            Some(ExtraData::Command(CommandExtra {
                pid: 0,
                params: String::new(),
            })),
        );
        assert!(reply(&st, false).contains(r#""ExtraData":"Unknown WorkType""#));
    }

    #[test]
    fn secrets_stay_out_of_replies() {
        let mut params = BTreeMap::new();
        params.insert("secret_token".to_string(), "x".to_string());
        params.insert("params".to_string(), "-v".to_string());
        let st = Status::new(
            "remote",
            Some(ExtraData::Remote(RemoteExtra {
                remote_params: params,
                ..RemoteExtra::unsent("n2", "demo")
            })),
        );
        let reply = reply(&st, true);
        assert!(!reply.contains("secret"), "{reply}");
        assert!(
            reply.contains(r#""RemoteParams":{"params":"-v"}"#),
            "{reply}"
        );
    }

    #[test]
    fn states() {
        assert_eq!(state_name(4), "Canceled");
        assert_eq!(state_name(9), "Unknown: 9");
        assert!(is_final(CANCELED) && is_final(FAILED) && !is_final(RUNNING));
    }
}
