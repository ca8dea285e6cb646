//! Where the API server is and how to prove who we are
//! (docs/kubernetes.md §4): a kubeconfig (file or runtime content) or the
//! pod's in-cluster service account.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// The in-cluster service account files.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How each request authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    None,
    Static(String),
    /// Read again for every request, so a rotated token is picked up.
    File(PathBuf),
}

/// Everything needed to talk to one API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `https://host:port` plus any path prefix, without a trailing `/`.
    pub server: String,
    /// PEM CA bundle; `None` means the system roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub token: Token,
    /// PEM client certificate chain and key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// The namespace the kubeconfig context names, if any.
    pub namespace: Option<String>,
}

impl Credentials {
    /// The bearer token for the next request, if any.
    pub fn bearer(&self) -> Result<Option<String>, String> {
        match &self.token {
            Token::None => Ok(None),
            Token::Static(t) => Ok(Some(t.clone())),
            Token::File(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("reading token file {}: {e}", p.display())),
        }
    }
}

/// The kubeconfig the default loading rules pick: the first entry of
/// `$KUBECONFIG`, else `~/.kube/config`.
pub fn default_kubeconfig_path() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        let v = v.to_string_lossy().to_string();
        if let Some(first) = v.split(':').find(|s| !s.is_empty()) {
            return Some(PathBuf::from(first));
        }
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config"))
}

/// Reads a kubeconfig file; relative file references are resolved from
/// its directory.
pub fn from_kubeconfig_file(path: &Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("error reading kubeconfig {}: {e}", path.display()))?;
    from_kubeconfig(&text, path.parent())
}

/// Parses kubeconfig content: the current context's cluster and user.
pub fn from_kubeconfig(text: &str, base: Option<&Path>) -> Result<Credentials, String> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| format!("error parsing kubeconfig: {e}"))?;
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or("");
    let context = named(&doc, "contexts", current, "context");
    let Some(context) = context else {
        return Err(if current.is_empty() {
            "invalid configuration: no current context is set".to_string()
        } else {
            format!("invalid configuration: context was not found for specified context: {current}")
        });
    };
    let cluster_name = str_of(context, "cluster");
    let user_name = str_of(context, "user");
    let cluster = named(&doc, "clusters", &cluster_name, "cluster")
        .ok_or_else(|| format!("invalid configuration: cluster {cluster_name:?} was not found"))?;
    let empty = Value::Mapping(Default::default());
    let user = named(&doc, "users", &user_name, "user").unwrap_or(&empty);
    let file = |name: &str| -> Result<Option<Vec<u8>>, String> {
        let data = str_of(user_or(cluster, user, name), &format!("{name}-data"));
        if !data.is_empty() {
            return base64_decode(&data)
                .map(Some)
                .ok_or_else(|| format!("invalid base64 in {name}-data"));
        }
        let p = str_of(user_or(cluster, user, name), name);
        if p.is_empty() {
            return Ok(None);
        }
        let p = resolve(base, &p);
        std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("error reading {name} {}: {e}", p.display()))
    };
    let server = str_of(cluster, "server").trim_end_matches('/').to_string();
    if server.is_empty() {
        return Err("invalid configuration: no server found for cluster".to_string());
    }
    let token = match (str_of(user, "token"), str_of(user, "tokenFile")) {
        (t, _) if !t.is_empty() => Token::Static(t),
        (_, f) if !f.is_empty() => Token::File(resolve(base, &f)),
        _ => Token::None,
    };
    let client = match (file("client-certificate")?, file("client-key")?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(
                "invalid configuration: client-certificate and client-key go together".into(),
            );
        }
    };
    let namespace = Some(str_of(context, "namespace")).filter(|n| !n.is_empty());
    Ok(Credentials {
        server,
        ca_pem: file("certificate-authority")?,
        insecure: cluster
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        token,
        client,
        namespace,
    })
}

/// The in-cluster service account, from the environment and `dir`.
pub fn in_cluster(dir: &Path) -> Result<Credentials, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    if host.is_empty() || port.is_empty() {
        return Err(
            "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined"
                .to_string(),
        );
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let token = dir.join("token");
    std::fs::metadata(&token).map_err(|e| format!("open {}: {e}", token.display()))?;
    let ca = std::fs::read(dir.join("ca.crt")).ok();
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    Ok(Credentials {
        server: format!("https://{host}:{port}"),
        ca_pem: ca,
        insecure: false,
        token: Token::File(token),
        client: None,
        namespace,
    })
}

fn resolve(base: Option<&Path>, p: &str) -> PathBuf {
    let p = Path::new(p);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// The cluster holds the CA keys, the user the client-cert keys.
fn user_or<'a>(cluster: &'a Value, user: &'a Value, name: &str) -> &'a Value {
    if name == "certificate-authority" {
        cluster
    } else {
        user
    }
}

/// `doc[list][i][inner]` for the entry whose `name` is `name`.
fn named<'a>(doc: &'a Value, list: &str, name: &str, inner: &str) -> Option<&'a Value> {
    doc.get(list)?
        .as_sequence()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get(inner)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Standard base64 with padding; whitespace ignored.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "apiVersion: v1
kind: Config
current-context: c2
contexts:
- name: c1
  context: {cluster: k1, user: u1}
- name: c2
  context: {cluster: k2, user: u2, namespace: ns2}
clusters:
- name: k1
  cluster: {server: 'https://one:1'}
- name: k2
  cluster:
    server: https://two:6443/prefix/
    certificate-authority-data: aGVsbG8=
users:
- name: u1
  user: {token: t1}
- name: u2
  user: {token: t2}
";

    #[test]
    fn current_context_picks_cluster_user_and_namespace() {
        let c = from_kubeconfig(CFG, None).unwrap();
        assert_eq!(c.server, "https://two:6443/prefix");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"hello"[..]));
        assert_eq!(c.token, Token::Static("t2".into()));
        assert_eq!(c.namespace.as_deref(), Some("ns2"));
        assert!(!c.insecure && c.client.is_none());
    }

    #[test]
    fn relative_files_and_errors() {
        let dir = std::env::temp_dir().join(format!("kubecfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tok"), "abc\n").unwrap();
        let text = "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n\
                    clusters: [{name: k, cluster: {server: 'https://h:1', insecure-skip-tls-verify: true}}]\n\
                    users: [{name: u, user: {tokenFile: tok}}]\n";
        let c = from_kubeconfig(text, Some(&dir)).unwrap();
        assert!(c.insecure);
        assert_eq!(c.bearer().unwrap().as_deref(), Some("abc"));
        assert!(
            from_kubeconfig("contexts: []", None)
                .unwrap_err()
                .contains("no current context")
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("a*b").is_none());
    }
}
