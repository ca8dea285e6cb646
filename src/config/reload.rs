//! What a reload may change (docs/control.md, reload): the backends
//! (`tcp-*`, `udp-*`, `ws-*` listeners and peers, `local-only`) and, unlike
//! Go, `log-level`. Everything else needs a restart, and a reload that
//! changes it is refused before anything is applied.

use std::fmt;

use super::{Config, ProxyCfg};

/// A section a reload cannot apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReloadable {
    /// The directive, as the config file names it.
    pub action: String,
    /// It was removed (else added or modified).
    pub removed: bool,
}

impl fmt::Display for NotReloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Go's words, which operators may search logs for.
        if self.removed {
            write!(
                f,
                "a non-reloadable config action '{}' was removed. Must restart receptor for changes to take effect",
                self.action
            )
        } else {
            write!(
                f,
                "a non-reloadable config action '{}' was modified or added. Must restart receptor for these changes to take effect",
                self.action
            )
        }
    }
}

impl std::error::Error for NotReloadable {}

/// Checks that `new` differs from `old` only where a reload applies.
pub fn check(old: &Config, new: &Config) -> Result<(), NotReloadable> {
    // Every field is named, so a new one cannot be forgotten here.
    let Config {
        node,
        log_level: _,
        trace,
        local_only: _,
        tcp_listeners: _,
        tcp_peers: _,
        udp_listeners: _,
        udp_peers: _,
        ws_listeners: _,
        ws_peers: _,
        control_services,
        proxies,
        work_commands,
        work_signing,
        work_verification,
        work_kubernetes,
        command_runner: _,
        command_runner_server: _,
        cert_tool: _,
        tls_servers,
        tls_clients,
        unsupported,
        config_files: _,
    } = new;
    same("node", &[&old.node], &[node])?;
    same("trace", &[old.trace], &[*trace])?;
    same("control-service", &old.control_services, control_services)?;
    for action in PROXY_ACTIONS {
        let of = |list: &[ProxyCfg]| -> Vec<ProxyCfg> {
            list.iter()
                .filter(|p| proxy_action(p) == action)
                .cloned()
                .collect()
        };
        same(action, &of(&old.proxies), &of(proxies))?;
    }
    same("work-command", &old.work_commands, work_commands)?;
    same(
        "work-signing",
        old.work_signing.as_slice(),
        work_signing.as_slice(),
    )?;
    same(
        "work-verification",
        old.work_verification.as_slice(),
        work_verification.as_slice(),
    )?;
    same("work-kubernetes", &old.work_kubernetes, work_kubernetes)?;
    same("tls-server", &old.tls_servers, tls_servers)?;
    same("tls-client", &old.tls_clients, tls_clients)?;
    // Names of directives this build cannot run (a start refuses them).
    same("unsupported", &old.unsupported, unsupported)?;
    Ok(())
}

const PROXY_ACTIONS: [&str; 6] = [
    "tcp-server",
    "tcp-client",
    "udp-server",
    "udp-client",
    "unix-socket-server",
    "unix-socket-client",
];

fn proxy_action(p: &ProxyCfg) -> &'static str {
    match p {
        ProxyCfg::TcpServer { .. } => "tcp-server",
        ProxyCfg::TcpClient { .. } => "tcp-client",
        ProxyCfg::UdpServer { .. } => "udp-server",
        ProxyCfg::UdpClient { .. } => "udp-client",
        ProxyCfg::UnixSocketServer { .. } => "unix-socket-server",
        ProxyCfg::UnixSocketClient { .. } => "unix-socket-client",
    }
}

/// Order does not matter (as in Go): an item new to the list, or one more
/// copy of an item, is "modified or added"; one gone, or one copy fewer,
/// is "removed".
fn same<T: PartialEq>(action: &str, old: &[T], new: &[T]) -> Result<(), NotReloadable> {
    let copies = |list: &[T], item: &T| list.iter().filter(|i| *i == item).count();
    let refused = |removed| NotReloadable {
        action: action.to_string(),
        removed,
    };
    if new.iter().any(|n| copies(new, n) > copies(old, n)) {
        return Err(refused(false));
    }
    if old.iter().any(|o| copies(old, o) > copies(new, o)) {
        return Err(refused(true));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Invocation, parse_args};

    fn config(args: &str) -> Config {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        match parse_args(&args).unwrap() {
            Invocation::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    const BASE: &str = "--node id=a --tcp-listener port=1 --work-command worktype=w command=cat";

    #[test]
    fn backends_and_log_level_may_change() {
        let old = config(BASE);
        let new = config(
            "--node id=a --tcp-listener port=2 cost=3 --tcp-peer address=x:1 \
             --udp-listener port=4 --ws-peer address=ws://x:1 --local-only \
             --log-level debug --work-command worktype=w command=cat",
        );
        assert_eq!(check(&old, &new), Ok(()));
    }

    #[test]
    fn the_order_of_items_does_not_matter() {
        let old = config(
            "--node id=a --work-command worktype=w command=cat --work-command worktype=v command=ls",
        );
        let new = config(
            "--node id=a --work-command worktype=v command=ls --work-command worktype=w command=cat",
        );
        assert_eq!(check(&old, &new), Ok(()));
    }

    #[test]
    fn other_changes_name_the_action_in_gos_words() {
        let old = config(BASE);
        let changed = |args: &str| check(&old, &config(args)).unwrap_err().to_string();
        assert_eq!(
            changed("--node id=a --tcp-listener port=1 --work-command worktype=w command=ls"),
            "a non-reloadable config action 'work-command' was modified or added. \
             Must restart receptor for these changes to take effect"
        );
        assert_eq!(
            changed("--node id=a --tcp-listener port=1"),
            "a non-reloadable config action 'work-command' was removed. \
             Must restart receptor for changes to take effect"
        );
        assert!(
            changed(&format!("{BASE} --control-service service=c2"))
                .contains("'control-service' was modified or added")
        );
        assert!(
            changed(&format!(
                "{BASE} --tcp-server port=9 remotenode=b remoteservice=s"
            ))
            .contains("'tcp-server'")
        );
        assert!(
            changed("--node id=b --tcp-listener port=1 --work-command worktype=w command=cat")
                .contains("'node'")
        );
        assert!(
            changed(&format!("{BASE} --tls-client name=t cert=c key=k")).contains("'tls-client'")
        );
    }

    #[test]
    fn a_duplicate_removed_counts_as_removed() {
        let twice = "--node id=a --tcp-server port=9 remotenode=b remoteservice=s \
                     --tcp-server port=9 remotenode=b remoteservice=s";
        let once = "--node id=a --tcp-server port=9 remotenode=b remoteservice=s";
        let e = check(&config(twice), &config(once)).unwrap_err();
        assert_eq!((e.action.as_str(), e.removed), ("tcp-server", true));
    }
}
