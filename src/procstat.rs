//! The few fields of `/proc/PID/stat` the daemon judges processes by:
//! whether one is a zombie, and whose child it is.

/// One process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// The state letter: `R`, `S`, `Z` (zombie), `X` (dead), ...
    pub state: u8,
    pub ppid: u32,
}

impl ProcStat {
    /// Parses a stat line. The second field is the command name in
    /// parentheses, which may itself hold spaces and `)`, so the fields
    /// after it are found from the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let (head, rest) = line.rsplit_once(')')?;
        let pid = head.split_once(" (")?.0.trim().parse().ok()?;
        let mut fields = rest.split_whitespace();
        let state = match fields.next()?.as_bytes() {
            &[letter] => letter,
            _ => return None,
        };
        let ppid = fields.next()?.parse().ok()?;
        Some(ProcStat { pid, state, ppid })
    }

    /// Reads `/proc/PID/stat`; None once the process is gone.
    pub fn read(pid: u32) -> Option<ProcStat> {
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcStat::parse(&line)
    }

    /// Exited, and not yet reaped by its parent (or being reaped).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }

    pub fn is_zombie(&self) -> bool {
        self.state == b'Z'
    }
}

/// Every process `/proc` lists now; ones that end during the scan are
/// left out.
pub fn all() -> std::io::Result<Vec<ProcStat>> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let pid = entry?.file_name().to_str().and_then(|n| n.parse().ok());
        if let Some(stat) = pid.and_then(ProcStat::read) {
            procs.push(stat);
        }
    }
    Ok(procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_is_skipped_whole() {
        let line = "4242 (sh -c (x) y) Z 1 4242 4242 0 -1 4194308 87 0 0 0 0 0 0 0 20 0 1 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                pid: 4242,
                state: b'Z',
                ppid: 1
            })
        );
        let st = ProcStat::parse("7 (receptor) S 1 7 7").expect("plain name");
        assert!(!st.is_dead() && !st.is_zombie());
        assert!(ProcStat::parse("8 (x) X 7").is_some_and(|s| s.is_dead() && !s.is_zombie()));
    }

    #[test]
    fn truncated_or_garbled_lines_are_refused() {
        let line = "4242 (sh) Z 1 4242";
        for cut in 0..line.len() {
            let part = &line[..cut];
            let want = cut >= "4242 (sh) Z 1".len();
            assert_eq!(ProcStat::parse(part).is_some(), want, "{part:?}");
        }
        assert_eq!(ProcStat::parse("x (sh) Z 1"), None);
        assert_eq!(ProcStat::parse("1 (sh) ZZ 1"), None);
        assert_eq!(ProcStat::parse("1 (sh) Z -1"), None);
    }

    #[test]
    fn this_process_is_found_alive_under_its_parent() {
        let me = ProcStat::read(std::process::id()).expect("own stat");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(!me.is_dead());
        let found = all().expect("scan");
        assert!(found.iter().any(|p| (p.pid, p.ppid) == (me.pid, me.ppid)));
    }
}
