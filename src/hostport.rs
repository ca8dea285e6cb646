//! `host:port` text, read the way Go's `net.SplitHostPort` and URL parser
//! read it: an IPv6 host is bracketed (`[::1]:7323`), and a host with
//! colons but no brackets has no port. One home for the peer addresses,
//! URL authorities, proxy URLs and `NO_PROXY` entries that all need it.

/// An authority `host[:port]`: the host without brackets and the port
/// text, if any. `None` when a bracket is not closed or is followed by
/// something other than `:port`.
pub fn split_authority(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port))),
        _ => Some((s, None)),
    }
}

/// Go's `net.SplitHostPort`: `host:port` with one colon, or `[v6]:port`;
/// the host without brackets.
pub fn split(s: &str) -> Option<(&str, &str)> {
    match split_authority(s)? {
        (host, Some(port)) => Some((host, port)),
        (_, None) => None,
    }
}

/// Go's `net.JoinHostPort`: brackets an IPv6 host.
pub fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_v4_split_at_the_colon() {
        assert_eq!(split("example.com:7323"), Some(("example.com", "7323")));
        assert_eq!(split("127.0.0.1:1"), Some(("127.0.0.1", "1")));
        assert_eq!(split(":80"), Some(("", "80")));
        assert_eq!(split("example.com:"), Some(("example.com", "")));
        assert_eq!(split("example.com"), None);
    }

    #[test]
    fn v6_needs_brackets_to_carry_a_port() {
        assert_eq!(split("[::1]:7323"), Some(("::1", "7323")));
        assert_eq!(split("[fe80::1%eth0]:1"), Some(("fe80::1%eth0", "1")));
        assert_eq!(split("[::1]"), None);
        assert_eq!(split("::1"), None);
        assert_eq!(split("a:b:c"), None);
    }

    #[test]
    fn an_authority_may_lack_its_port() {
        assert_eq!(split_authority("h"), Some(("h", None)));
        assert_eq!(split_authority("h:9"), Some(("h", Some("9"))));
        assert_eq!(split_authority("[::1]"), Some(("::1", None)));
        assert_eq!(split_authority("[::1]:9"), Some(("::1", Some("9"))));
        assert_eq!(split_authority("::1"), Some(("::1", None)));
    }

    #[test]
    fn malformed_brackets_are_rejected() {
        assert_eq!(split_authority("[::1"), None);
        assert_eq!(split_authority("[::1]x"), None);
        assert_eq!(split_authority("[::1]x:9"), None);
    }

    #[test]
    fn join_brackets_v6_only() {
        assert_eq!(join("::1", 9), "[::1]:9");
        assert_eq!(join("h", 9), "h:9");
        let joined = join("fe80::1", 80);
        assert_eq!(split(&joined), Some(("fe80::1", "80")));
    }
}
