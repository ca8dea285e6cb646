//! Certificates for TLS tests, made by our own cert tools through the
//! real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CMD_TIMEOUT, RECEPTOR, output_with_input, show};

/// A CA in a directory, and the node certificates it signs.
pub struct Pki {
    pub dir: PathBuf,
}

/// A signed certificate and its key.
pub struct NodeCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Makes `ca.crt` and `ca.key` in `dir`.
    pub fn new(dir: &Path, ca_name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        pki.tool(&[
            "--cert-init",
            &format!("commonname={ca_name}"),
            "bits=2048",
            "outcert=ca.crt",
            "outkey=ca.key",
        ]);
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for node `id`: its node ID, `localhost` and 127.0.0.1.
    pub fn node(&self, id: &str) -> NodeCert {
        self.issue(id, &[id], &[])
    }

    /// A certificate named `file` listing `ids` as node IDs (none is
    /// allowed), signed with extra signreq args (e.g. `notafter=...`).
    pub fn issue(&self, file: &str, ids: &[&str], sign_args: &[&str]) -> NodeCert {
        self.issue_for(file, ids, &[], sign_args)
    }

    /// Like [`Pki::issue`], also naming the DNS names `hosts`.
    pub fn issue_for(
        &self,
        file: &str,
        ids: &[&str],
        hosts: &[&str],
        sign_args: &[&str],
    ) -> NodeCert {
        let mut req = vec![
            "--cert-makereq".to_string(),
            format!("commonname={file}"),
            "bits=2048".into(),
            format!("outreq={file}.csr"),
            format!("outkey={file}.key"),
            "dnsname=localhost".into(),
            "ipaddress=127.0.0.1".into(),
        ];
        req.extend(ids.iter().map(|id| format!("nodeid={id}")));
        req.extend(hosts.iter().map(|h| format!("dnsname={h}")));
        self.tool(&req.iter().map(String::as_str).collect::<Vec<_>>());
        let mut sign = vec![
            "--cert-signreq".to_string(),
            format!("req={file}.csr"),
            "cacert=ca.crt".into(),
            "cakey=ca.key".into(),
            format!("outcert={file}.crt"),
            "verify=true".into(),
        ];
        sign.extend(sign_args.iter().map(|a| a.to_string()));
        self.tool(&sign.iter().map(String::as_str).collect::<Vec<_>>());
        NodeCert {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        }
    }

    fn tool(&self, args: &[&str]) {
        let mut cmd = Command::new(RECEPTOR);
        cmd.args(args).current_dir(&self.dir);
        let out = output_with_input(cmd, None, CMD_TIMEOUT);
        assert!(out.status.success(), "cert tool {args:?}: {}", show(&out));
    }
}

impl NodeCert {
    /// YAML item: a `tls-server` section `name` with this identity that
    /// requires client certificates from `ca`.
    pub fn server(&self, name: &str, ca: &Path) -> String {
        format!(
            "- tls-server:\n    name: {name}\n    cert: {:?}\n    key: {:?}\n    \
             requireclientcert: true\n    clientcas: {:?}",
            self.cert, self.key, ca
        )
    }

    /// YAML item: a `tls-client` section `name` with this identity that
    /// trusts `ca`, plus `extra` lines (four-space indented).
    pub fn client(&self, name: &str, ca: &Path, extra: &str) -> String {
        format!(
            "- tls-client:\n    name: {name}\n    cert: {:?}\n    key: {:?}\n    \
             rootcas: {:?}\n{extra}",
            self.cert, self.key, ca
        )
    }
}

/// YAML item: a TLS TCP listener on 127.0.0.1:`port`.
pub fn tls_listener(port: u16, tls: &str) -> String {
    format!("- tcp-listener: {{bindaddr: 127.0.0.1, port: {port}, tls: {tls}}}")
}

/// YAML item: a TLS TCP peer dialing 127.0.0.1:`port`.
pub fn tls_peer(port: u16, tls: &str) -> String {
    format!("- tcp-peer: {{address: \"127.0.0.1:{port}\", tls: {tls}}}")
}
