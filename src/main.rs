//! `jwks-operator`: command-line wiring only; each command lives in `cli/`.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jwks_operator::jose::{Algorithm, Curve};

/// Manage JSON Web Key Sets on Kubernetes: generate keys into Secrets, publish their public
/// halves, rotate them safely. The `jwk` and `jwks` commands work offline on files.
#[derive(Parser)]
#[command(name = "jwks-operator", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile SigningKeys and JwksPublications until SIGTERM or Ctrl-C.
    ///
    /// Uses the kubeconfig (KUBECONFIG, ~/.kube/config) or, inside a pod, the service account.
    Run(RunArgs),
    /// Serve a publication's JWK Set (and discovery document) over HTTP(S) until SIGTERM or Ctrl-C.
    ///
    /// Routes: /.well-known/jwks.json, /.well-known/openid-configuration, /healthz, /readyz
    /// (200 once valid content has loaded), /metrics. Content that fails to load is logged and
    /// the previous content kept. Writes no files.
    ///
    /// Example: jwks-operator serve --dir /etc/jwks
    Serve(ServeArgs),
    /// Print the CustomResourceDefinitions (YAML), exactly as crds/ holds them.
    Crds {
        /// Write one file per CRD into this directory instead of printing (regenerates crds/).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Work with single JSON Web Keys: generate, convert PEM, compute thumbprints.
    #[command(subcommand)]
    Jwk(JwkCommand),
    /// Work with JWK Sets.
    #[command(subcommand)]
    Jwks(JwksCommand),
    /// Start a rotation of a SigningKey now (sets its jwks-operator.io/rotate annotation).
    ///
    /// The operator generates a new key and publishes it; it signs after prePublish.
    ///
    /// Example: jwks-operator rotate api-tokens -n auth
    Rotate {
        /// The SigningKey.
        name: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Revoke keys at once (adds their kids to the jwks-operator.io/revoke annotation).
    ///
    /// For emergencies: revoked keys leave every JWKS now, without grace. If the active key is
    /// among them, a fresh key is generated and activated immediately.
    ///
    /// Example: jwks-operator revoke api-tokens -n auth --kid 3Yc…
    Revoke {
        /// The SigningKey.
        name: String,
        /// Key id to revoke (repeat for several).
        #[arg(long = "kid", value_name = "KID", required = true)]
        kids: Vec<String>,
        /// Revoke kids the SigningKey's status does not list.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Show SigningKeys: a table of them, or one in detail with its keys and conditions.
    Status {
        /// Show this SigningKey in detail.
        name: Option<String>,
        #[command(flatten)]
        namespace: NamespaceArg,
        /// List the SigningKeys of every namespace.
        #[arg(short = 'A', long, conflicts_with_all = ["name", "namespace"])]
        all_namespaces: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Manage SigningKeys and JwksPublications in this namespace only. Default: every namespace.
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
    /// Read and write Secrets only in these namespaces (comma-separated); a SigningKey elsewhere
    /// gets `Ready=False, SecretsNotAllowed`. Default: every managed namespace. Pair it with
    /// RBAC that grants Secrets there only (the chart's `secretNamespaces`).
    #[arg(long, value_name = "NS,NS", value_delimiter = ',')]
    secret_namespaces: Option<Vec<String>>,
    #[command(flatten)]
    log: LogArgs,
    /// Image of the JWKS server Deployments (this operator's own image: it runs `serve`).
    #[arg(
        long,
        value_name = "IMAGE",
        env = "JWKS_OPERATOR_SERVER_IMAGE",
        default_value = concat!("ghcr.io/jwks-operator/jwks-operator:", env!("CARGO_PKG_VERSION"))
    )]
    server_image: String,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9090).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Run the controllers only while holding the Lease `jwks-operator` (for several replicas).
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease. Default: the pod's own (POD_NAMESPACE), else `default`.
    #[arg(long, value_name = "NS", requires = "leader_election")]
    leader_election_namespace: Option<String>,
    /// How long the Lease holds without renewal: a standby takes over at most this long after
    /// the leader dies.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    leader_election_lease_seconds: u64,
}

#[derive(Args)]
struct LogArgs {
    /// Log as human-readable text or as one JSON object per line.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "JWKS_OPERATOR_LOG_FORMAT"
    )]
    log_format: cli::run::LogFormat,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    source: ServeSource,
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (e.g. a mounted kubernetes.io/tls Secret's
    /// tls.crt); reloaded when the file changes.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (e.g. tls.key); reloaded when the file changes.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    /// On SIGTERM, keep accepting connections this many seconds before draining: behind a
    /// Service, clients go on being sent to a terminating pod until every kube-proxy has
    /// removed it (the Deployments the operator creates use 5).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    shutdown_delay_seconds: u64,
    /// Worker threads serving connections. Default: two per CPU the process may use (cgroup
    /// limits included), at most 8.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: Option<u16>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ServeSource {
    /// Directory where the publication's ConfigMap is mounted (jwks.json, cache-max-age,
    /// openid-configuration); follows the kubelet's atomic updates.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Watch the publication's ConfigMap through the Kubernetes API instead (kubeconfig or
    /// in-cluster service account; needs get/list/watch on ConfigMaps).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = cli::serve::parse_configmap)]
    configmap: Option<(String, String)>,
}

#[derive(Args)]
struct NamespaceArg {
    /// Namespace to work in. Default: the kubeconfig context's namespace.
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
}

#[derive(Subcommand)]
enum JwkCommand {
    /// Generate a key pair: writes DIR/key.pem (PKCS#8, mode 0600) and prints the public JWK.
    ///
    /// Example: jwks-operator jwk generate --alg ES256 --out-dir ./keys
    Generate(GenerateArgs),
    /// Convert a PEM key (PKCS#8, PKCS#1, SEC1 or SPKI public key) to a JWK.
    ///
    /// Example: jwks-operator jwk from-pem tls.key --alg PS256
    FromPem(FromPemArgs),
    /// Print the RFC 7638 SHA-256 thumbprint (the kid this operator assigns) of a PEM or JWK file.
    Thumbprint {
        /// PEM or JWK file; - reads standard input.
        file: PathBuf,
    },
}

#[derive(Args)]
struct GenerateArgs {
    /// Algorithm: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA (signing),
    /// RSA-OAEP RSA-OAEP-256 ECDH-ES ECDH-ES+A128KW ECDH-ES+A256KW (encryption).
    #[arg(long, value_parser = parse_algorithm)]
    alg: Algorithm,
    /// RSA modulus size: 2048 (default), 3072 or 4096. RSA algorithms only.
    #[arg(long)]
    key_size: Option<u32>,
    /// Curve for ECDH-ES algorithms: P-256 (default), P-384, P-521.
    #[arg(long, value_parser = parse_curve)]
    curve: Option<Curve>,
    /// Also issue a self-signed certificate with this common name: writes DIR/cert.pem and adds
    /// x5c and x5t#S256 to the JWK.
    #[arg(long, value_name = "NAME")]
    cert_cn: Option<String>,
    /// Certificate validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500), requires = "cert_cn")]
    cert_days: u32,
    /// Directory for key.pem (created if missing; an existing key.pem is never overwritten).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out_dir: PathBuf,
    /// Print the private JWK (which includes the public members) instead of the public one.
    #[arg(long)]
    private: bool,
}

#[derive(Args)]
struct FromPemArgs {
    /// PEM file; - reads standard input.
    file: PathBuf,
    /// Algorithm to bind the key to. Default: the one the key implies (RSA: RS256, P-256:
    /// ES256, P-384: ES384, P-521: ES512, Ed25519: EdDSA).
    #[arg(long, value_parser = parse_algorithm)]
    alg: Option<Algorithm>,
    /// Print the private JWK (needs a private key PEM).
    #[arg(long)]
    private: bool,
}

#[derive(Subcommand)]
enum JwksCommand {
    /// Check a JWK Set against the interop rules real verifiers depend on. Exit 0: clean; 1:
    /// findings (one per line, as JSON-pointer: reason); 2: the input could not be read.
    ///
    /// Example: jwks-operator jwks lint https://auth.example.com/.well-known/jwks.json
    Lint {
        /// File, - for standard input, or an http(s) URL (also checks the HTTP response).
        source: String,
        /// Require every kid to be the key's RFC 7638 SHA-256 thumbprint.
        #[arg(long)]
        thumbprint_kids: bool,
    },
}

fn parse_algorithm(value: &str) -> Result<Algorithm, String> {
    value
        .parse()
        .map_err(|e: jwks_operator::jose::Error| e.to_string())
}

fn parse_curve(value: &str) -> Result<Curve, String> {
    value
        .parse()
        .map_err(|e: jwks_operator::jose::Error| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::run(cli::run::RunOptions {
            namespace: args.namespace,
            secret_namespaces: args.secret_namespaces,
            log_format: args.log.log_format,
            server_image: args.server_image,
            metrics_listen: args.metrics_listen,
            leader_election: args.leader_election,
            lease_namespace: args.leader_election_namespace,
            lease_duration: std::time::Duration::from_secs(args.leader_election_lease_seconds),
        }),
        Command::Serve(args) => cli::serve::run(cli::serve::ServeOptions {
            source: cli::serve::ContentSource::from_flags(args.source.dir, args.source.configmap),
            listen: args.listen,
            tls: args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| jwks_operator::server::TlsFiles { cert, key }),
            log_format: args.log.log_format,
            shutdown_delay: std::time::Duration::from_secs(args.shutdown_delay_seconds),
            workers: args.workers.map(usize::from),
        }),
        Command::Crds { out_dir } => cli::crds::run(out_dir.as_deref()),
        Command::Jwk(JwkCommand::Generate(args)) => cli::jwk::generate(cli::jwk::GenerateOptions {
            algorithm: args.alg,
            key_size: args.key_size,
            curve: args.curve,
            cert_cn: args.cert_cn,
            cert_days: args.cert_days,
            out_dir: args.out_dir,
            private: args.private,
        }),
        Command::Jwk(JwkCommand::FromPem(args)) => {
            cli::jwk::from_pem(&args.file, args.alg, args.private)
        }
        Command::Jwk(JwkCommand::Thumbprint { file }) => cli::jwk::thumbprint(&file),
        Command::Jwks(JwksCommand::Lint {
            source,
            thumbprint_kids,
        }) => cli::lint::run(&source, thumbprint_kids),
        Command::Rotate { name, namespace } => cli::manual::rotate(&name, namespace.namespace),
        Command::Revoke {
            name,
            kids,
            force,
            namespace,
        } => cli::manual::revoke(&name, namespace.namespace, &kids, force),
        Command::Status {
            name,
            namespace,
            all_namespaces,
        } => {
            let scope = match (name, all_namespaces) {
                (Some(name), _) => cli::status::Scope::Named(name),
                (None, true) => cli::status::Scope::AllNamespaces,
                (None, false) => cli::status::Scope::Namespace,
            };
            cli::status::run(scope, namespace.namespace)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}
