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

    /// The object `work status` and `work list` reply with: keys sorted,
    /// `StateName` added, and secret params left out.
    /// `known_type` is false for units of a work type not configured here,
    /// whose ExtraData Go shows as `"Unknown WorkType"`.
    pub fn to_reply(&self, known_type: bool) -> String {
        let extra = match &self.extra {
            _ if !known_type => Ok("\"Unknown WorkType\"".to_string()),
            Some(ExtraData::Remote(r)) => serde_json::to_string(&r.without_secrets()),
            other => serde_json::to_string(other),
        }
        .unwrap_or_else(|_| "null".into());
        format!(
            "{{\"Detail\":{},\"ExtraData\":{extra},\"State\":{},\"StateName\":{},\"StdoutSize\":{},\"WorkType\":{}}}",
            json_str(&self.detail),
            self.state,
            json_str(&state_name(self.state)),
            self.stdout_size,
            json_str(&self.work_type),
        )
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Work-type specific data; untagged, told apart by their fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraData {
    Command(CommandExtra),
    Remote(RemoteExtra),
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

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl RemoteExtra {
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

    #[test]
    fn reply_shape_matches_go() {
        let st: Status = serde_json::from_str(
            r#"{"State":0,"Detail":"Waiting for Input Data","StdoutSize":0,"WorkType":"demo","ExtraData":{"Pid":0,"Params":"-c \"cat; sleep 3; echo done\""}}"#,
        )
        .unwrap();
        assert_eq!(
            st.to_reply(true),
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
            done.to_reply(true),
            r#"{"Detail":"exit status 0","ExtraData":null,"State":2,"StateName":"Succeeded","StdoutSize":17,"WorkType":"demo"}"#
        );
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
        assert!(
            st.to_reply(false)
                .contains(r#""ExtraData":"Unknown WorkType""#)
        );
    }

    #[test]
    fn secrets_stay_out_of_replies() {
        let mut params = BTreeMap::new();
        params.insert("secret_token".to_string(), "x".to_string());
        params.insert("params".to_string(), "-v".to_string());
        let st = Status::new(
            "remote",
            Some(ExtraData::Remote(RemoteExtra {
                remote_node: "n2".into(),
                remote_work_type: "demo".into(),
                remote_params: params,
                remote_unit_id: String::new(),
                remote_started: false,
                local_cancelled: false,
                local_released: false,
                sign_work: false,
                tls_client: String::new(),
                expiration: ZERO_TIME.into(),
            })),
        );
        let reply = st.to_reply(true);
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
