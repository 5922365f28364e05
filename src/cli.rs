//! Command-line interface definitions.

use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a Pingora-based Kubernetes gateway and sidecar mesh"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `ferry_gateway=debug`.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway. Standalone: `--config` points at Kubernetes manifests on disk.
    Gateway(GatewayArgs),
    /// Run an HTTP/1.1 + h2c backend that answers with a JSON description of each request.
    Echo(EchoArgs),
    /// Show what a running proxy serves, read from its admin port.
    ProxyConfig(ProxyConfigArgs),
    /// Watch Kubernetes and push snapshots to gateways (`ferry gateway --controller`).
    Controller(ControllerArgs),
    /// Show every proxy connected to a controller and whether it is in sync.
    ProxyStatus(ProxyStatusArgs),
    /// Open the controller's dashboard (live service graph, routes, Gateways, proxies,
    /// validation messages) on this machine through port-forwards to every controller
    /// replica, like `istioctl dashboard`.
    Dashboard(DashboardArgs),
    /// Print the CustomResourceDefinitions Ferry ships (Istio networking and security), for
    /// `ferry crds | kubectl apply --server-side -f -`. The Gateway API CRDs are the upstream
    /// release's: `ferry precheck` says which to apply.
    Crds(CrdsArgs),
    /// Check manifests (or a live cluster) for every problem Ferry would report, each with a
    /// stable code, the object and the field, like `istioctl analyze`. Exits 1 when a problem
    /// at or above --failure-threshold is found.
    Analyze(AnalyzeArgs),
    /// Convert Ingresses (with their ingress-nginx annotations) to Gateway API objects Ferry
    /// serves the same way: Gateways, HTTPRoutes, LocalRateLimitPolicies. What has no Gateway
    /// API form is printed with the reason (stderr, and as comments on top of the output).
    Migrate(MigrateArgs),
    /// Check that a cluster is ready for `helm install`: API reachable, Kubernetes version,
    /// CRDs already installed by others, and your permissions.
    Precheck(PrecheckArgs),
    /// Print Ferry's version.
    Version(VersionArgs),
    /// Print a manifest with the sidecar added to its pods, as the injection webhook would
    /// (like `istioctl kube-inject`): `ferry inject -f deploy.yaml | kubectl apply -f -`.
    Inject(InjectCmdArgs),
    /// The per-pod proxy: serves the traffic `sidecar-init` captures (outbound by mesh
    /// routes, inbound to the app), from manifests (--config) or a controller.
    Sidecar(SidecarArgs),
    /// The pod's init step: iptables rules sending the pod's TCP traffic through its sidecar
    /// (as istio-init). Needs NET_ADMIN in the pod's network namespace.
    SidecarInit(SidecarInitArgs),
}

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Only Istio's kinds (`istio`) or only Ferry's own (`ferry`: LocalRateLimitPolicy).
    #[arg(long, value_parser = ["istio", "ferry"])]
    pub only: Option<String>,
}

#[derive(Args)]
pub struct SidecarArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The pod's namespace: short Service names resolve in it.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Port captured outbound connections arrive on (sidecar-init --outbound-port).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port captured inbound connections arrive on (sidecar-init --inbound-port).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Admin server address (/config_dump, /logging, /endpoints, /metrics): loopback only.
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// Status server address: what kubelet probes and Prometheus reach (/ready,
    /// /healthz/ready, /healthz, /metrics, /stats/prometheus), read-only, as Istio's 15020.
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub status: SocketAddr,
    /// The app's kubelet HTTP probes the injector rewrote to the status port, as JSON
    /// (`/app-health/<container>/<kind>` -> the original `httpGet`).
    #[arg(long, env = "FERRY_APP_PROBES", default_value = "")]
    pub app_probes: String,
    /// ALLOW_ANY passes connections to unknown destinations through; REGISTRY_ONLY refuses
    /// them (Istio's outboundTrafficPolicy).
    #[arg(long, default_value = "ALLOW_ANY", value_parser = ["ALLOW_ANY", "REGISTRY_ONLY"])]
    pub outbound_traffic_policy: String,
    /// This pod's labels, `key=value` (metrics `source_app`, `source_version`). Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// On SIGTERM, how long open connections may take to finish before the sidecar exits.
    #[arg(long, default_value_t = 5)]
    pub drain_seconds: u64,
    /// Worker threads (Istio's proxy `concurrency`).
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub http1: Http1Args,
}

#[derive(Args, Clone, Debug)]
pub struct SidecarInitArgs {
    /// Port the sidecar takes captured outbound connections on.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port the sidecar takes captured inbound connections on.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// The sidecar's status port (probes, metrics): never captured, so kubelet and
    /// Prometheus reach it in plaintext under STRICT mTLS (as Istio's 15020/15021/15090).
    #[arg(long, default_value_t = 15020)]
    pub status_port: u16,
    /// The sidecar's uid: its own connections are never captured (no loops).
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The sidecar's gid, likewise.
    #[arg(long, default_value_t = 1337)]
    pub proxy_gid: u32,
    /// Outbound ports that bypass the sidecar, comma-separated
    /// (traffic.sidecar.istio.io/excludeOutboundPorts).
    #[arg(long, default_value = "")]
    pub exclude_outbound_ports: String,
    /// Inbound ports that bypass the sidecar (traffic.sidecar.istio.io/excludeInboundPorts).
    #[arg(long, default_value = "")]
    pub exclude_inbound_ports: String,
    /// Destination ranges that bypass the sidecar, comma-separated CIDRs
    /// (traffic.sidecar.istio.io/excludeOutboundIPRanges).
    #[arg(long, default_value = "")]
    pub exclude_outbound_ip_ranges: String,
    /// Destination ranges that go through the sidecar; `*` for all
    /// (traffic.sidecar.istio.io/includeOutboundIPRanges).
    #[arg(long, default_value = "*")]
    pub include_outbound_ip_ranges: String,
    /// Print the rules (iptables-restore format) instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where `ferry analyze` and `ferry migrate` read objects from.
#[derive(Args)]
pub struct ObjectSources {
    /// Manifest files or directories (read recursively). Repeatable.
    #[arg(short = 'f', long = "filename", required_unless_present = "cluster")]
    pub files: Vec<PathBuf>,
    /// The objects in the cluster (with any -f files added on top).
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig for --cluster; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub sources: ObjectSources,
    /// Output: table (one line per problem) or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    /// Lowest severity that makes the exit status 1: Error or Warning.
    #[arg(long, default_value = "Error", value_parser = ["Error", "Warning"])]
    pub failure_threshold: String,
}

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub sources: ObjectSources,
    /// Output format.
    #[arg(short = 'o', long = "output", default_value = "yaml", value_parser = ["yaml", "json"])]
    pub output: String,
    /// GatewayClass of the Gateways written.
    #[arg(long, default_value = "ferry")]
    pub gateway_class: String,
    /// Ports of the Gateways' HTTP and HTTPS listeners.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// Ingress classes converted, comma-separated (class-less Ingresses always are).
    #[arg(long, default_value = "ferry,nginx")]
    pub ingress_class: String,
}

#[derive(Args)]
pub struct PrecheckArgs {
    /// Kubeconfig; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace Ferry will be installed in.
    #[arg(short = 'n', long, default_value = "ferry-system")]
    pub namespace: String,
}

#[derive(Args)]
pub struct VersionArgs {
    /// Only the version number.
    #[arg(long)]
    pub short: bool,
}

#[derive(Args)]
pub struct ControllerArgs {
    /// Kubeconfig file; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The proxies' port (TLS): push streams and workload certificates, each call
    /// authenticated by the proxy's ServiceAccount token (as istiod's 15012).
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,
    /// The operators' port: /debug/proxies (ferry proxy-status), /metrics, /ready. Loopback
    /// by default (kubectl port-forward reaches it), as it lists every proxy.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub monitoring: SocketAddr,
    /// The dashboard's port: the live service graph, routes, Gateways, proxies and
    /// validation messages (UI and read-only JSON under /api/). Loopback by default: reach
    /// it with `ferry dashboard` (a port-forward).
    #[arg(long, default_value = "127.0.0.1:20001")]
    pub dashboard: SocketAddr,
    /// Serve no dashboard (proxies' traffic summaries are then dropped on arrival).
    #[arg(long)]
    pub no_dashboard: bool,
    /// SPIFFE trust domain of workload identities (Istio's `trustDomain`).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime of workload certificates, e.g. `24h`, `90m`, `60s`; proxies renew at half.
    #[arg(long, default_value = "24h", value_parser = parse_lifetime)]
    pub workload_cert_lifetime: std::time::Duration,
    /// Another name (DNS or IP) the controller's certificate carries, beyond
    /// ferry-controller.<namespace>.svc and localhost. Repeatable.
    #[arg(long = "server-name")]
    pub server_names: Vec<String>,
    /// The mesh's root namespace (Istio's `rootNamespace`): security policies there without
    /// a selector apply to the whole mesh.
    #[arg(long, env = "FERRY_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,
    /// Namespace holding the leader-election Lease (replicas share it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's identity in the Lease (default: POD_NAME, else host name + pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Serve the sidecar-injection webhook (HTTPS, POST /inject) on this address; needs
    /// --webhook-cert and --webhook-key.
    #[arg(long, requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// PEM certificate chain of the webhook (its Service's DNS name).
    #[arg(long)]
    pub webhook_cert: Option<PathBuf>,
    /// PEM private key of the webhook.
    #[arg(long)]
    pub webhook_key: Option<PathBuf>,
    /// Deploy a gateway (Deployment, Service, ServiceAccount, PodDisruptionBudget) for each
    /// Gateway of Ferry's classes, as Istio and Envoy Gateway do; `false`: Gateways are served
    /// by gateways deployed by hand (the chart's).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub deploy_gateways: bool,
    #[command(flatten)]
    pub inject: InjectArgs,
}

/// What injected sidecars and deployed gateways run.
#[derive(Args, Clone)]
pub struct InjectArgs {
    /// Image of the injected containers.
    #[arg(long = "proxy-image", env = "FERRY_PROXY_IMAGE", default_value = concat!("ghcr.io/ferry-dev/ferry:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Controller address the injected sidecars dial.
    #[arg(
        long = "proxy-controller",
        env = "FERRY_PROXY_CONTROLLER",
        default_value = "ferry-controller.ferry-system.svc:15012"
    )]
    pub controller: String,
    /// imagePullPolicy of the gateways the controller deploys.
    #[arg(
        long = "proxy-pull-policy",
        env = "FERRY_PROXY_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub pull_policy: String,
    /// A flag for every injected `ferry sidecar`, e.g. `--sidecar-arg=--max-connections=5000`
    /// (repeatable; checked at start).
    #[arg(long = "sidecar-arg", allow_hyphen_values = true)]
    pub sidecar_args: Vec<String>,
    /// A flag for every `ferry gateway` the controller deploys per Gateway, e.g.
    /// `--gateway-arg=--request-header-timeout=5s` (repeatable; checked at start).
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    pub gateway_args: Vec<String>,
}

impl InjectArgs {
    pub fn deploy_config(&self) -> ferry_controller::deploy::DeployConfig {
        ferry_controller::deploy::DeployConfig {
            image: self.image.clone(),
            pull_policy: self.pull_policy.clone(),
            controller: self.controller.clone(),
            proxy_args: self.gateway_args.clone(),
        }
    }

    pub fn config(&self) -> ferry_controller::inject::InjectConfig {
        ferry_controller::inject::InjectConfig {
            image: self.image.clone(),
            controller: self.controller.clone(),
            proxy_args: self.sidecar_args.clone(),
            ..Default::default()
        }
    }

    /// The extra proxy flags parse as `ferry sidecar` / `ferry gateway` would parse them: a
    /// typo fails the controller's start, not every pod it injects or deploys.
    pub fn check_proxy_args(&self) -> Result<(), String> {
        let check = |command: &str, args: &[String]| {
            let base = ["ferry", command, "--controller=controller:15012"];
            let argv = base
                .iter()
                .map(|s| s.to_string())
                .chain(args.iter().cloned());
            Cli::try_parse_from(argv)
                .map(|_| ())
                .map_err(|e| format!("--{command}-arg {args:?}: {e}"))
        };
        check("sidecar", &self.sidecar_args)?;
        check("gateway", &self.gateway_args)
    }
}

#[derive(Args)]
pub struct InjectCmdArgs {
    /// The manifest to inject (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
    /// CronJobs; other documents are printed unchanged); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    #[command(flatten)]
    pub inject: InjectArgs,
}

#[derive(Args)]
pub struct DashboardArgs {
    /// The namespace Ferry's controller runs in.
    #[arg(short = 'n', long, default_value = "ferry-system")]
    pub namespace: String,
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Local port (0: any free port).
    #[arg(short = 'p', long, default_value_t = 20001)]
    pub port: u16,
    /// Only this controller pod (default: every ready replica, their traffic added up).
    #[arg(long)]
    pub pod: Option<String>,
    /// A controller dashboard's address to ask instead of the cluster's pods (e.g. your own
    /// port-forward, or a controller run outside the cluster). Repeatable: one per replica.
    #[arg(long, value_name = "HOST:PORT")]
    pub replica: Vec<String>,
    /// The controller's dashboard port in its pod (its `--dashboard`).
    #[arg(long, default_value_t = 20001)]
    pub remote_port: u16,
    /// Open the URL in a browser when there is a desktop (else it is printed only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub browser: bool,
}

#[derive(Args)]
pub struct ProxyStatusArgs {
    /// The controller's monitoring address (`kubectl -n ferry-system port-forward
    /// deploy/ferry-controller 15014`).
    #[arg(
        long,
        env = "FERRY_CONTROLLER_MONITORING",
        default_value = "127.0.0.1:15014"
    )]
    pub controller: String,
    /// Output format: table or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

#[derive(Args)]
pub struct ProxyConfigArgs {
    #[arg(value_enum)]
    pub kind: ProxyConfigKind,
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: String,
    /// Output format: table or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

impl ProxyConfigArgs {
    pub fn json(&self) -> bool {
        self.output == "json"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyConfigKind {
    Listeners,
    Routes,
    Clusters,
    Endpoints,
}

/// Where a proxy (gateway or sidecar) takes its configuration from.
#[derive(Args)]
pub struct SourceArgs {
    /// A YAML/JSON manifest file, or a directory of them (read recursively, re-read on change).
    #[arg(
        long,
        required_unless_present = "controller",
        conflicts_with = "controller"
    )]
    pub config: Option<PathBuf>,
    /// Controller address (`host:port` of its TLS proxy port): take snapshots from `ferry
    /// controller` instead of files.
    #[arg(long, env = "FERRY_CONTROLLER")]
    pub controller: Option<String>,
    /// With --controller: PEM roots the controller's certificate must chain to (the
    /// `ferry-ca-root` ConfigMap, mounted by the injector and the chart).
    #[arg(
        long,
        env = "FERRY_CONTROLLER_ROOT",
        default_value = "/var/run/secrets/ferry/root-cert.pem"
    )]
    pub controller_root: PathBuf,
    /// With --controller: this pod's projected ServiceAccount token (audience `ferry`),
    /// re-read at each connection.
    #[arg(
        long,
        env = "FERRY_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/ferry-token"
    )]
    pub token_file: PathBuf,
    /// Without --controller: a directory with this proxy's workload identity for mesh mTLS
    /// (`cert-chain.pem`, `key.pem`, `root-cert.pem`, Istio's names), re-read on change. With
    /// --controller the identity comes from the controller's CA.
    #[arg(long, conflicts_with = "controller")]
    pub identity_dir: Option<PathBuf>,
    /// With --config: the mesh's root namespace (Istio's `rootNamespace`); security policies
    /// there without a selector apply mesh-wide.
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// With --controller: this proxy's unique name, shown by `ferry proxy-status`
    /// (default: POD_NAME.POD_NAMESPACE, else the host name).
    #[arg(long, env = "FERRY_PROXY_NAME")]
    pub proxy_name: Option<String>,
}

#[derive(Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// With --controller: the Gateway API Gateway (`namespace/name`) this gateway implements.
    /// Istio Gateways are chosen by --label as in standalone mode.
    #[arg(long, env = "FERRY_SCOPE", default_value = "")]
    pub scope: String,
    /// Admin server address (/config_dump, /logging, /endpoints, /metrics): loopback only.
    #[arg(long, default_value = "127.0.0.1:15000", value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// Status server address (/ready, /healthz/ready, /healthz, /metrics), read-only: what
    /// kubelet probes and Prometheus reach in a cluster (the chart sets 0.0.0.0:15020).
    #[arg(long)]
    pub status: Option<SocketAddr>,
    /// Serve the dashboard (the controller's UI and /api/) for this gateway's own traffic
    /// and manifests, e.g. `127.0.0.1:20001`. Standalone mode (with --config) only: under a
    /// controller, the controller's dashboard shows every proxy.
    #[arg(long, conflicts_with = "controller")]
    pub dashboard: Option<SocketAddr>,
    /// This gateway's labels, `key=value`, matched by Istio Gateway selectors. Replaces the
    /// defaults `istio=ingressgateway` and `istio=ingress`. Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Address listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port that serves Kubernetes Ingress objects (0: none, as for an egress gateway).
    #[arg(long, default_value_t = 8080)]
    pub ingress_port: u16,
    /// Port that serves the hosts Ingress objects list under `spec.tls`, over TLS (0: off).
    #[arg(long, default_value_t = 8443)]
    pub ingress_tls_port: u16,
    /// IngressClasses served, comma-separated (Ingresses without a class are served too).
    /// Ingresses of class `nginx` get ingress-nginx's defaults (HTTP to HTTPS redirect for
    /// their TLS hosts): `--ingress-class ferry,nginx` takes over ingress-nginx's Ingresses.
    #[arg(long, default_value = "ferry")]
    pub ingress_class: String,
    /// Threads serving connections (Istio's proxy `concurrency`); 0: one per core.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 0)]
    pub concurrency: usize,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub http1: Http1Args,
    #[command(flatten)]
    pub client_address: crate::cli_limits::ClientAddressArgs,
}

/// Ferry's HTTP/1 request loop: head limits, and a switch to Pingora's path for everything.
#[derive(Args, Clone, Debug)]
pub struct Http1Args {
    /// Longest request line accepted (414 beyond).
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_request_line_bytes: usize,
    /// Largest request head accepted, request line and headers (431 beyond).
    #[arg(long, default_value_t = 60 * 1024)]
    pub max_request_head_bytes: usize,
    /// Most request headers accepted (431 beyond; at most 128).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub max_request_headers: u16,
    /// Requests served on one client connection before it is closed, as nginx's
    /// keepalive_requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_requests_per_connection: u32,
    /// Serve every HTTP/1 request with Pingora's generic proxy path instead of Ferry's own
    /// (for comparisons; slower).
    #[arg(long, env = "FERRY_HTTP1_FALLBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub http1_fallback: bool,
    #[command(flatten)]
    pub limits: crate::cli_limits::LimitArgs,
    #[command(flatten)]
    pub disclosure: crate::cli_limits::DisclosureArgs,
}

impl Http1Args {
    /// `cause_detail`: what clients not trusted are told by default (a gateway: the code).
    pub fn options(
        &self,
        cause_detail: crate::cli_limits::CauseDetail,
    ) -> ferry_gateway::proxy::http1::Http1Options {
        let head = ferry_gateway::proxy::http1::HeadLimits {
            max_request_line: self.max_request_line_bytes,
            max_head: self.max_request_head_bytes,
            max_headers: usize::from(self.max_request_headers),
        };
        ferry_gateway::proxy::http1::Http1Options {
            limits: self.limits.limits(head),
            disclosure: self.disclosure.disclosure(cause_detail),
            force_fallback: self.http1_fallback,
            max_requests_per_connection: (self.max_requests_per_connection > 0)
                .then_some(self.max_requests_per_connection),
        }
    }
}

/// Identity, access log and tracing of a proxy.
#[derive(Args)]
pub struct TelemetryArgs {
    /// Access log on stdout: json, text (Istio's layout) or off.
    #[arg(long, env = "FERRY_ACCESS_LOG", default_value = "json")]
    pub access_log: ferry_gateway::telemetry::AccessLogFormat,
    /// Record Istio's standard request metrics (`false` only to measure their cost).
    #[arg(long, env = "FERRY_ISTIO_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub istio_metrics: bool,
    /// OTLP/HTTP collector for trace spans, e.g. http://otel-collector:4318. Off when unset.
    #[arg(long, env = "FERRY_TRACING_ENDPOINT")]
    pub tracing_endpoint: Option<String>,
    /// Percentage of new traces sampled (a caller's decision is always kept), as Istio's
    /// `sampling`.
    #[arg(long, env = "FERRY_TRACING_SAMPLING", default_value_t = 1.0)]
    pub tracing_sampling: f64,
    /// This proxy's workload name (metrics `source_workload`, span `service.name`).
    #[arg(long, env = "FERRY_WORKLOAD_NAME", default_value = "ferry-gateway")]
    pub workload_name: String,
    /// This proxy's namespace (metrics `source_workload_namespace`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "unknown")]
    pub workload_namespace: String,
}

#[derive(Args)]
pub struct EchoArgs {
    /// Address to listen on, e.g. 127.0.0.1:9080.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Name reported in every answer (e.g. the "pod" or version this backend stands for).
    #[arg(long, default_value = "echo")]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Print one JSON line per request on stdout.
    #[arg(long)]
    pub log_requests: bool,
    /// Status to answer when the request does not ask for one (simulates a failing pod).
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Delay before answering when the request does not ask for one (simulates a slow pod).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Answer every request with N filler bytes instead of the JSON description (a static
    /// responder for benchmarks).
    #[arg(long)]
    pub fixed_body: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM), as a backend terminating its own TLS
    /// (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {text:?} must be key=value")),
    }
}

/// `--admin`: a socket address on loopback (see `ferry_gateway::admin::check_loopback`).
fn parse_admin(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|e| format!("{e}"))?;
    ferry_gateway::admin::check_loopback(addr)
}

/// A lifetime such as `24h`, `90m`, `60s` (at least a minute: renewals run at half of it).
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    let lifetime = crate::cli_limits::parse_duration(text)?;
    if lifetime < std::time::Duration::from_secs(60) {
        return Err(format!("{text:?}: at least 60s"));
    }
    Ok(lifetime)
}
