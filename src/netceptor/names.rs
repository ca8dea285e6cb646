//! The rules every node ID and service name must follow, wherever one
//! enters: the config, a peer's initial message, routing updates (the
//! sender, the forwarder and every key of its connections), service
//! advertisements, work submissions and stream dials.
//!
//! Go checks none of this, so one forged peer could make a node's own
//! routing update too large for a frame; the limits here keep any legal
//! update of a node with a sane number of peers inside one.

use std::fmt;

use super::addr::is_local_alias;

/// Longest node ID: every DNS host name fits (RFC 1035: 253 bytes).
pub const MAX_NODE_ID_LEN: usize = 253;
/// Longest service name: the 8-byte field of a data message.
pub const MAX_SERVICE_LEN: usize = 8;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong {
        len: usize,
        max: usize,
    },
    /// The local alias (`localhost`, any case): it always means "this node".
    Reserved,
    /// A control character or `/`, or the whole name `.` or `..`: node
    /// IDs name directories (`datadir/<node>/`) and log lines.
    BadCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("is empty"),
            NameError::TooLong { len, max } => write!(f, "is {len} bytes long (at most {max})"),
            NameError::Reserved => write!(f, "is reserved (it means the local node)"),
            NameError::BadCharacter => {
                f.write_str("contains a control character or '/', or is '.' or '..'")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// A node ID another node may have: not empty, at most
/// [`MAX_NODE_ID_LEN`] bytes, not the local alias, no control characters
/// or `/`, and not `.` or `..`.
pub fn check_node_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.len() > MAX_NODE_ID_LEN {
        return Err(NameError::TooLong {
            len: id.len(),
            max: MAX_NODE_ID_LEN,
        });
    }
    if id == "." || id == ".." || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(NameError::BadCharacter);
    }
    if is_local_alias(id) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// A node a local user may address: a valid node ID or the local alias.
pub fn check_target_node(name: &str) -> Result<(), NameError> {
    match check_node_id(name) {
        Err(NameError::Reserved) => Ok(()),
        other => other,
    }
}

/// A service name: not empty, at most [`MAX_SERVICE_LEN`] bytes.
pub fn check_service(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SERVICE_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_SERVICE_LEN,
        });
    }
    Ok(())
}

/// A name for a log line: as it is when short and printable, else
/// escaped and cut short, so a hostile 64 KB ID cannot fill a line (or
/// forge one with a newline).
pub fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    let printable = !name.chars().any(char::is_control);
    if !name.is_empty() && name.len() <= SHOWN && printable {
        return name.to_string();
    }
    let mut end = name.len().min(SHOWN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if end == name.len() {
        return format!("{name:?}");
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert_eq!(check_node_id("a.example.com"), Ok(()));
        assert_eq!(check_node_id(&"x".repeat(253)), Ok(()));
        assert_eq!(
            check_node_id(&"x".repeat(254)),
            Err(NameError::TooLong { len: 254, max: 253 })
        );
        assert_eq!(check_node_id(""), Err(NameError::Empty));
        assert_eq!(check_node_id("LocalHost"), Err(NameError::Reserved));
        assert_eq!(check_node_id("localhost.localdomain"), Ok(()));
        assert_eq!(check_node_id("node 1_a-b"), Ok(()));
        for bad in ["../../x", "a/b", ".", "..", "a\nb", "a\0"] {
            assert_eq!(check_node_id(bad), Err(NameError::BadCharacter), "{bad:?}");
        }
        assert_eq!(check_target_node("localhost"), Ok(()));
        assert_eq!(check_target_node(""), Err(NameError::Empty));
        assert_eq!(
            NameError::TooLong { len: 9, max: 8 }.to_string(),
            "is 9 bytes long (at most 8)"
        );
    }

    #[test]
    fn service_names() {
        assert_eq!(check_service("control"), Ok(()));
        assert_eq!(check_service("12345678"), Ok(()));
        assert_eq!(
            check_service("123456789"),
            Err(NameError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(check_service(""), Err(NameError::Empty));
    }

    #[test]
    fn long_names_are_shortened_in_logs() {
        assert_eq!(shown("a"), "a");
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(100);
        let s = shown(&long);
        assert!(s.ends_with("... (200 bytes)"), "{s}");
        assert!(s.len() < 100);
    }
}
