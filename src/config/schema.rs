//! The table of every legacy directive and its fields.
//!
//! Field names are the lower-case Go field names (no separators), which is
//! what users type on the command line and in YAML.

/// How a field's value is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Str,
    Int,
    Float,
    Bool,
    /// A Go duration string (`30s`, `1m30s`); empty means "not set".
    Duration,
    /// A list of strings; repeated `key=value` appends.
    StrList,
    /// A map of strings to numbers (`nodecost`).
    FloatMap,
    /// Free-form JSON object (`work-python config`).
    JsonMap,
    /// A list of maps (`node firewallrules`).
    MapList,
}

impl FieldType {
    /// The type as shown in the help text.
    pub(crate) fn help_name(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Duration => "duration",
            FieldType::StrList => "[]string (may be repeated)",
            FieldType::FloatMap => "JSON dict of string to float",
            FieldType::JsonMap => "JSON dict with string keys",
            FieldType::MapList => "list of maps",
        }
    }
}

/// One field of a directive.
#[derive(Debug)]
pub(crate) struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    pub default: Option<&'static str>,
    /// Receives a bare (non `key=value`) parameter.
    pub bare: bool,
    pub description: &'static str,
}

/// Groups of directives in the help text, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    General,
    Resources,
    Backends,
    Services,
    Workers,
    Certificates,
}

impl Section {
    pub(crate) const ALL: [Section; 6] = [
        Section::General,
        Section::Resources,
        Section::Backends,
        Section::Services,
        Section::Workers,
        Section::Certificates,
    ];

    pub(crate) fn heading(self) -> Option<&'static str> {
        match self {
            Section::General => None,
            Section::Resources => Some("Commands that configure resources used by other commands:"),
            Section::Backends => {
                Some("Commands to configure back-ends, which connect Receptor nodes together:")
            }
            Section::Services => {
                Some("Commands to configure services that run on top of the Receptor mesh:")
            }
            Section::Workers => Some("Commands to configure workers that process units of work:"),
            Section::Certificates => {
                Some("Commands to generate certificates and run a certificate authority:")
            }
        }
    }
}

/// One directive (`--tcp-listener`, `- tcp-listener:`).
#[derive(Debug)]
pub(crate) struct DirectiveSpec {
    /// Canonical lower-case name.
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldSpec],
    /// Must be present; added implicitly when absent (only `node`).
    pub required: bool,
    /// May appear at most once.
    pub singleton: bool,
    /// Must be the only directive given.
    pub exclusive: bool,
    /// Not listed in help or completion.
    pub hidden: bool,
    pub section: Section,
}

impl DirectiveSpec {
    pub(crate) fn field(&self, lower_name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == lower_name)
    }

    pub(crate) fn bare_field(&self) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.bare)
    }

    pub(crate) fn field_names(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
        names.join(", ")
    }
}

/// Looks a directive up by its canonical lower-case name.
pub(crate) fn directive(lower_name: &str) -> Option<&'static DirectiveSpec> {
    DIRECTIVES.iter().find(|d| d.name == lower_name)
}

const fn field(name: &'static str, ty: FieldType, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
        default: None,
        bare: false,
        description,
    }
}

const fn req(name: &'static str, ty: FieldType, description: &'static str) -> FieldSpec {
    FieldSpec {
        required: true,
        ..field(name, ty, description)
    }
}

const fn def(
    name: &'static str,
    ty: FieldType,
    default: &'static str,
    description: &'static str,
) -> FieldSpec {
    FieldSpec {
        default: Some(default),
        ..field(name, ty, description)
    }
}

const fn bare(spec: FieldSpec) -> FieldSpec {
    FieldSpec { bare: true, ..spec }
}

const fn plain(
    name: &'static str,
    description: &'static str,
    fields: &'static [FieldSpec],
    section: Section,
) -> DirectiveSpec {
    DirectiveSpec {
        name,
        description,
        fields,
        required: false,
        singleton: false,
        exclusive: false,
        hidden: false,
        section,
    }
}

const fn singleton(spec: DirectiveSpec) -> DirectiveSpec {
    DirectiveSpec {
        singleton: true,
        ..spec
    }
}

const fn exclusive(spec: DirectiveSpec) -> DirectiveSpec {
    DirectiveSpec {
        exclusive: true,
        ..spec
    }
}

use FieldType::{Bool, Duration, Float, FloatMap, Int, JsonMap, MapList, Str, StrList};
use Section::{Backends, Certificates, General, Resources, Services, Workers};

const COST: FieldSpec = def("cost", Float, "1.0", "Connection cost (weight)");
const NODECOST: FieldSpec = field("nodecost", FloatMap, "Per-node costs");
const ALLOWEDPEERS: FieldSpec = field(
    "allowedpeers",
    StrList,
    "Peer node IDs to allow via this connection",
);
const BINDADDR: FieldSpec = def("bindaddr", Str, "0.0.0.0", "Local address to bind to");
const REDIAL: FieldSpec = def("redial", Bool, "true", "Keep redialing on lost connection");
const TLS_SERVER: FieldSpec = field("tls", Str, "Name of TLS server config");
const TLS_CLIENT: FieldSpec = field("tls", Str, "Name of TLS client config");
const PERMISSIONS: FieldSpec = def("permissions", Int, "0600", "Socket file permissions");
const REMOTENODE: FieldSpec = req("remotenode", Str, "Receptor node to connect to");
const REMOTESERVICE: FieldSpec = req("remoteservice", Str, "Receptor service name to connect to");
const SERVICE_BIND: FieldSpec = req("service", Str, "Receptor service name to bind to");
const WORKTYPE: FieldSpec = req("worktype", Str, "Name for this worker type");
const VERIFYSIGNATURE: FieldSpec = def(
    "verifysignature",
    Bool,
    "false",
    "Verify a signed work submission",
);
const SKIPNAMES: FieldSpec = def(
    "skipreceptornamescheck",
    Bool,
    "false",
    "Skip verifying the Receptor node ID in the certificate at startup",
);
const MINTLS13: FieldSpec = def(
    "mintls13",
    Bool,
    "false",
    "Require TLS 1.3 (otherwise the minimum is 1.2)",
);
const NOTBEFORE: FieldSpec = field(
    "notbefore",
    Str,
    "Effective (NotBefore) date/time, in RFC3339 format",
);
const NOTAFTER: FieldSpec = field(
    "notafter",
    Str,
    "Expiration (NotAfter) date/time, in RFC3339 format",
);
const COMMONNAME: FieldSpec = req(
    "commonname",
    Str,
    "Common name to assign to the certificate",
);

/// Every directive, in help order.
pub(crate) static DIRECTIVES: &[DirectiveSpec] = &[
    DirectiveSpec {
        required: true,
        ..singleton(plain(
            "node",
            "Specifies the node configuration of this instance",
            &[
                bare(field(
                    "id",
                    Str,
                    "Node ID (defaults to the local host name)",
                )),
                def(
                    "datadir",
                    Str,
                    "/tmp/receptor",
                    "Directory in which to store node data",
                ),
                field(
                    "firewallrules",
                    MapList,
                    "Firewall rules, see documentation for syntax",
                ),
                field(
                    "maxidleconnectiontimeout",
                    Duration,
                    "Maximum time without traffic before a backend connection is refreshed (at least 21s)",
                ),
                def(
                    "maxnodes",
                    Int,
                    "10000",
                    "Most other nodes to learn from routing updates; updates from further new nodes are dropped",
                ),
                def(
                    "maxconnections",
                    Int,
                    "100000",
                    "Most connections between nodes to keep in the routing table; updates beyond it are dropped",
                ),
                def(
                    "maxadvertisements",
                    Int,
                    "20000",
                    "Most service advertisements of other nodes to keep; further new ones are dropped",
                ),
                field(
                    "receptorkubesupportreconnect",
                    Str,
                    "Kubernetes log reconnect mode (v2 config only)",
                ),
                field(
                    "receptorkubeclientsetqps",
                    Str,
                    "Kubernetes client QPS (v2 config only)",
                ),
                field(
                    "receptorkubeclientsetburst",
                    Str,
                    "Kubernetes client burst (v2 config only)",
                ),
                field(
                    "receptorkubeclientsetratelimiter",
                    Str,
                    "Kubernetes client rate limiter (v2 config only)",
                ),
            ],
            General,
        ))
    },
    singleton(plain(
        "local-only",
        "Runs a self-contained node with no backend",
        &[field("local", Bool, "Unused")],
        General,
    )),
    exclusive(plain(
        "version",
        "Displays the Receptor version",
        &[],
        General,
    )),
    singleton(plain(
        "log-level",
        "Specifies the verbosity level for log output",
        &[bare(def(
            "level",
            Str,
            "error",
            "Log level: error, warning, info or debug",
        ))],
        General,
    )),
    singleton(plain(
        "trace",
        "Enables packet tracing output (accepted, no effect)",
        &[],
        General,
    )),
    plain(
        "control-service",
        "Runs a control service",
        &[
            def(
                "service",
                Str,
                "control",
                "Receptor service name to listen on",
            ),
            field("filename", Str, "Local Unix socket to bind the service to"),
            PERMISSIONS,
            field(
                "tls",
                Str,
                "Name of TLS server config for the Receptor listener",
            ),
            field(
                "tcplisten",
                Str,
                "Local TCP port or host:port to bind the service to",
            ),
            field(
                "tcptls",
                Str,
                "Name of TLS server config for the TCP listener",
            ),
            def(
                "maxclients",
                Int,
                "256",
                "Most clients served at once on the socket and TCP listeners; idle ones make room, extra ones are refused",
            ),
        ],
        General,
    ),
    plain(
        "tls-server",
        "Define a TLS server configuration",
        &[
            req("name", Str, "Name of this TLS server configuration"),
            req("cert", Str, "Server certificate filename"),
            req("key", Str, "Server private key filename"),
            def(
                "requireclientcert",
                Bool,
                "false",
                "Require client certificates",
            ),
            field(
                "clientcas",
                Str,
                "Filename of CA bundle to verify client certs with",
            ),
            field(
                "pinnedclientcert",
                StrList,
                "Pinned fingerprint of required client certificate",
            ),
            SKIPNAMES,
            MINTLS13,
        ],
        Resources,
    ),
    plain(
        "tls-client",
        "Define a TLS client configuration",
        &[
            req("name", Str, "Name of this TLS client configuration"),
            req("cert", Str, "Client certificate filename"),
            req("key", Str, "Client private key filename"),
            field(
                "rootcas",
                Str,
                "Root CA bundle to use instead of system trust",
            ),
            def(
                "insecureskipverify",
                Bool,
                "false",
                "Accept any server cert",
            ),
            field(
                "pinnedservercert",
                StrList,
                "Pinned fingerprint of required server certificate",
            ),
            SKIPNAMES,
            MINTLS13,
        ],
        Resources,
    ),
    plain(
        "tcp-listener",
        "Run a backend listener on a TCP port",
        &[
            BINDADDR,
            bare(req("port", Int, "Local TCP port to listen on")),
            TLS_SERVER,
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "tcp-peer",
        "Make an outbound backend connection to a TCP peer",
        &[
            bare(req(
                "address",
                Str,
                "Remote address (host:port) to connect to",
            )),
            REDIAL,
            TLS_CLIENT,
            COST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "udp-listener",
        "Run a backend listener on a UDP port",
        &[
            BINDADDR,
            bare(req("port", Int, "Local UDP port to listen on")),
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "udp-peer",
        "Make an outbound backend connection to a UDP peer",
        &[
            bare(req(
                "address",
                Str,
                "Remote address (host:port) to connect to",
            )),
            REDIAL,
            COST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "ws-listener",
        "Run an HTTP server that accepts websocket connections",
        &[
            BINDADDR,
            bare(req("port", Int, "Local TCP port to run the HTTP server on")),
            def("path", Str, "/", "URI path of the websocket server"),
            TLS_SERVER,
            COST,
            NODECOST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "ws-peer",
        "Connect outbound to a websocket peer",
        &[
            bare(req("address", Str, "URL to connect to (ws:// or wss://)")),
            REDIAL,
            field(
                "extraheader",
                Str,
                "Extra HTTP header (Name:value) sent on the initial connection",
            ),
            TLS_CLIENT,
            COST,
            ALLOWEDPEERS,
        ],
        Backends,
    ),
    plain(
        "command-service",
        "Run an interactive command via a Receptor service",
        &[
            SERVICE_BIND,
            req("command", Str, "Command to execute on a connection"),
            TLS_SERVER,
        ],
        Services,
    ),
    plain(
        "ip-router",
        "Run an IP router using a tun interface",
        &[
            req("networkname", Str, "Name of this network and service"),
            field("interface", Str, "Name of the local tun interface"),
            req("localnet", Str, "Local /30 CIDR address"),
            field(
                "routes",
                Str,
                "Comma separated list of CIDR subnets to advertise",
            ),
        ],
        Services,
    ),
    plain(
        "tcp-server",
        "Listen for TCP and forward via Receptor",
        &[
            req("port", Int, "Local TCP port to bind to"),
            def(
                "bindaddr",
                Str,
                "0.0.0.0",
                "Address to bind the TCP listener to",
            ),
            REMOTENODE,
            REMOTESERVICE,
            field(
                "tlsserver",
                Str,
                "Name of TLS server config for the TCP listener",
            ),
            field(
                "tlsclient",
                Str,
                "Name of TLS client config for the Receptor connection",
            ),
        ],
        Services,
    ),
    plain(
        "tcp-client",
        "Listen on a Receptor service and forward via TCP",
        &[
            SERVICE_BIND,
            req("address", Str, "Address for the outbound TCP connection"),
            field(
                "tlsserver",
                Str,
                "Name of TLS server config for the Receptor service",
            ),
            field(
                "tlsclient",
                Str,
                "Name of TLS client config for the TCP connection",
            ),
        ],
        Services,
    ),
    plain(
        "udp-server",
        "Listen for UDP and forward via Receptor",
        &[
            req("port", Int, "Local UDP port to bind to"),
            def(
                "bindaddr",
                Str,
                "0.0.0.0",
                "Address to bind the UDP listener to",
            ),
            REMOTENODE,
            REMOTESERVICE,
        ],
        Services,
    ),
    plain(
        "udp-client",
        "Listen on a Receptor service and forward via UDP",
        &[
            SERVICE_BIND,
            req("address", Str, "Address for the outbound UDP connection"),
        ],
        Services,
    ),
    plain(
        "unix-socket-server",
        "Listen on a Unix socket and forward via Receptor",
        &[
            req(
                "filename",
                Str,
                "Socket filename, which will be overwritten",
            ),
            PERMISSIONS,
            REMOTENODE,
            REMOTESERVICE,
            field(
                "tls",
                Str,
                "Name of TLS client config for the Receptor connection",
            ),
        ],
        Services,
    ),
    plain(
        "unix-socket-client",
        "Listen via Receptor and forward to a Unix socket",
        &[
            SERVICE_BIND,
            req("filename", Str, "Socket filename, which must already exist"),
            field(
                "tls",
                Str,
                "Name of TLS server config for the Receptor connection",
            ),
        ],
        Services,
    ),
    singleton(plain(
        "work-signing",
        "Private key to sign work submissions",
        &[
            bare(field(
                "privatekey",
                Str,
                "Private key to sign work submissions",
            )),
            field(
                "tokenexpiration",
                Duration,
                "Expiration of the signed JSON web token, e.g. 3h or 3h30m (default 5m)",
            ),
        ],
        Workers,
    )),
    singleton(plain(
        "work-verification",
        "Public key to verify work submissions",
        &[bare(field(
            "publickey",
            Str,
            "Public key to verify signed work submissions",
        ))],
        Workers,
    )),
    plain(
        "work-command",
        "Run a worker using an external command",
        &[
            WORKTYPE,
            req("command", Str, "Command to run to process units of work"),
            field("params", Str, "Command-line parameters"),
            def(
                "allowruntimeparams",
                Bool,
                "false",
                "Allow users to add more parameters",
            ),
            VERIFYSIGNATURE,
        ],
        Workers,
    ),
    DirectiveSpec {
        hidden: true,
        ..plain(
            "command-runner",
            "Wrapper around a process invocation",
            &[
                req("command", Str, "Command to run"),
                req("params", Str, "Command parameters"),
                req("unitdir", Str, "Work unit directory"),
            ],
            Workers,
        )
    },
    DirectiveSpec {
        hidden: true,
        ..plain(
            "command-runner-server",
            "Fork server that starts command runners for its daemon",
            &[],
            Workers,
        )
    },
    plain(
        "work-kubernetes",
        "Run a worker using Kubernetes",
        &[
            WORKTYPE,
            field("namespace", Str, "Kubernetes namespace to create pods in"),
            field("image", Str, "Container image to use for the worker pod"),
            field(
                "command",
                Str,
                "Command to run in the container (overrides entrypoint)",
            ),
            field(
                "params",
                Str,
                "Command-line parameters to pass to the entrypoint",
            ),
            def(
                "authmethod",
                Str,
                "incluster",
                "One of: kubeconfig, incluster, runtime",
            ),
            field(
                "kubeconfig",
                Str,
                "Kubeconfig filename (for authmethod=kubeconfig)",
            ),
            field(
                "pod",
                Str,
                "Pod definition filename, in JSON or YAML format",
            ),
            def(
                "allowruntimeauth",
                Bool,
                "false",
                "Allow passing API parameters at runtime",
            ),
            def(
                "allowruntimecommand",
                Bool,
                "false",
                "Allow specifying image and command at runtime",
            ),
            def(
                "allowruntimeparams",
                Bool,
                "false",
                "Allow adding command parameters at runtime",
            ),
            def(
                "allowruntimepod",
                Bool,
                "false",
                "Allow passing a pod at runtime",
            ),
            def(
                "deletepodonrestart",
                Bool,
                "true",
                "On restart, delete the pod if in pending state",
            ),
            def(
                "streammethod",
                Str,
                "logger",
                "Method for connecting to worker pods: logger or tcp",
            ),
            VERIFYSIGNATURE,
        ],
        Workers,
    ),
    plain(
        "work-python",
        "Run a worker using a Python plugin (deprecated)",
        &[
            WORKTYPE,
            req("plugin", Str, "Python module name of the worker plugin"),
            req("function", Str, "Receptor-exported function to call"),
            field("config", JsonMap, "Plugin-specific configuration"),
        ],
        Workers,
    ),
    exclusive(plain(
        "cert-init",
        "Initialize PKI CA",
        &[
            COMMONNAME,
            req(
                "bits",
                Int,
                "Bit length of the encryption keys of the certificate",
            ),
            NOTBEFORE,
            NOTAFTER,
            req("outcert", Str, "File to save the CA certificate to"),
            req("outkey", Str, "File to save the CA private key to"),
        ],
        Certificates,
    )),
    exclusive(plain(
        "cert-makereq",
        "Create certificate request",
        &[
            COMMONNAME,
            field(
                "bits",
                Int,
                "Bit length of the encryption keys of the certificate",
            ),
            field("dnsname", StrList, "DNS names to add to the certificate"),
            field(
                "ipaddress",
                StrList,
                "IP addresses to add to the certificate",
            ),
            field(
                "nodeid",
                StrList,
                "Receptor node IDs to add to the certificate",
            ),
            req("outreq", Str, "File to save the certificate request to"),
            field("inkey", Str, "Private key to use for the request"),
            field(
                "outkey",
                Str,
                "File to save the private key to (new key will be generated)",
            ),
        ],
        Certificates,
    )),
    exclusive(plain(
        "cert-signreq",
        "Sign request and produce certificate",
        &[
            req("req", Str, "Certificate request PEM filename"),
            req("cacert", Str, "CA certificate PEM filename"),
            req("cakey", Str, "CA private key PEM filename"),
            NOTBEFORE,
            NOTAFTER,
            req("outcert", Str, "File to save the signed certificate to"),
            def(
                "verify",
                Bool,
                "false",
                "If true, do not prompt the user for verification",
            ),
        ],
        Certificates,
    )),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, d) in DIRECTIVES.iter().enumerate() {
            assert_eq!(d.name, d.name.to_ascii_lowercase());
            assert!(
                DIRECTIVES[i + 1..].iter().all(|o| o.name != d.name),
                "{}",
                d.name
            );
            for (j, f) in d.fields.iter().enumerate() {
                assert_eq!(f.name, f.name.to_ascii_lowercase());
                assert!(d.fields[j + 1..].iter().all(|o| o.name != f.name));
            }
            assert!(
                d.fields.iter().filter(|f| f.bare).count() <= 1,
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn every_spec_directive_is_known() {
        let names = [
            "node",
            "log-level",
            "trace",
            "local-only",
            "tls-server",
            "tls-client",
            "tcp-listener",
            "tcp-peer",
            "udp-listener",
            "udp-peer",
            "ws-listener",
            "ws-peer",
            "control-service",
            "work-command",
            "work-kubernetes",
            "work-python",
            "work-signing",
            "work-verification",
            "tcp-server",
            "tcp-client",
            "udp-server",
            "udp-client",
            "unix-socket-server",
            "unix-socket-client",
            "command-service",
            "ip-router",
            "cert-init",
            "cert-makereq",
            "cert-signreq",
            "command-runner",
            "command-runner-server",
            "version",
        ];
        for n in names {
            assert!(directive(n).is_some(), "{n}");
        }
        assert_eq!(names.len(), DIRECTIVES.len());
    }
}
