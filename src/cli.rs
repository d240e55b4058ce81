//! The command line: every form builds a [`Config`] (a one-listener config for `proxy` and `gateway`) and
//! runs it the same way `hopgate run FILE` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, AccessLog, CertPair, Config, ListenAddr, Listener, OptionError, Proxy, Route, Target, TargetOption,
};
use crate::server::Server;
use crate::server::log::AccessLogger;
use crate::tunnel_client::TunnelClient;

#[derive(Parser, Debug)]
#[command(
    name = "hopgate",
    version,
    about = "One binary for every HTTP integration point: relay (forward proxy), tunnels, protocol and resource gateways",
    after_help = "With no command, hopgate runs the embedded default: a forward proxy on 127.0.0.1:8080."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Seconds to let in-flight requests finish after SIGINT/SIGTERM [default: 10, or drain_secs in FILE]
    #[arg(long, global = true, value_name = "SECS")]
    pub drain: Option<f64>,
    /// Access log: stdout, off, or a file path (SIGUSR1 reopens it) [default: stdout, or access_log in FILE]
    #[arg(long, global = true, value_name = "WHERE")]
    pub access_log: Option<String>,
    /// Access-log lines: hopgate, common, combined (Apache's) or json [default: hopgate, or access_log_format in FILE]
    #[arg(long, global = true, value_name = "FORMAT", value_parser = config::AccessLogFormat::parse)]
    pub access_log_format: Option<config::AccessLogFormat>,
    /// More diagnostics on stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything a config file describes
    Run { file: PathBuf },
    /// Validate a config file: exit 0 with a summary, or exit 2 with FILE:LINE and the reason
    Check { file: PathBuf },
    /// Forward proxy: absolute-form http:// (relay), https:// (TLS origination) and ftp:// (HTTP/FTP gateway);
    /// an HTTPS proxy with --listen https://
    Proxy(ProxyArgs),
    /// Reverse gateway in front of one upstream
    Gateway(GatewayArgs),
    /// Tunnel client: a CONNECT tunnel through an HTTP(S) proxy per local connection, or once over stdin/stdout
    Tunnel(TunnelArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["listen", "stdio"])))]
pub struct TunnelArgs {
    /// The proxy: http://HOST:PORT or https://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub proxy: String,
    /// Where the tunnel goes: HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// Accept local connections here (IP:PORT; port 0 picks one); each gets its own tunnel
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub listen: Option<std::net::SocketAddr>,
    /// One tunnel over stdin/stdout (an ssh ProxyCommand)
    #[arg(long)]
    pub stdio: bool,
    /// Credentials for the proxy: USER:PASS
    #[arg(long, value_name = "USER:PASS")]
    pub proxy_user: Option<String>,
    /// Extra CA bundle trusted for an https:// proxy
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

fn parse_socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    config::parse_listen(s).map(|l| l.addr)
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// ADDR, http://ADDR or https://ADDR
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_parser = config::parse_listen)]
    pub listen: ListenAddr,
    /// Allow client-chosen targets inside this CIDR even when they are loopback, link-local... (repeatable)
    #[arg(long = "allow-target", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow_targets: Vec<ipnet::IpNet>,
    /// A port CONNECT may reach (repeatable) [default: 443]
    #[arg(long = "connect-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub connect_ports: Vec<u16>,
    /// htpasswd file (bcrypt $2y$/$2b$, {SHA}, $apr1$): Proxy-Authorization: Basic is then required (407)
    #[arg(long, value_name = "HTPASSWD")]
    pub users: Option<PathBuf>,
    /// Relay every request and tunnel through this proxy: http://[user:pass@]host:port
    #[arg(long, value_name = "URL", value_parser = config::parse_parent)]
    pub parent: Option<config::Parent>,
    /// Extra CA bundle (PEM) trusted for https:// targets; the system roots are always trusted
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Serve only targets matching NAME or *.SUFFIX (repeatable); others get 403
    #[arg(long = "allow-domain", value_name = "PATTERN", value_parser = config::DomainPattern::parse)]
    pub allow_domains: Vec<config::DomainPattern>,
    /// Refuse targets matching NAME or *.SUFFIX (repeatable): 403; deny wins over allow
    #[arg(long = "deny-domain", value_name = "PATTERN", value_parser = config::DomainPattern::parse)]
    pub deny_domains: Vec<config::DomainPattern>,
    /// Requests per second per client address and per user; past it 429 with Retry-After
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_second: Option<u32>,
    /// Bytes per second each way per client address and per user; past it transfers are slowed [at least 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(config::MIN_BYTES_PER_SECOND..))]
    pub max_bytes_per_second: Option<u64>,
    /// Take connections the packet filter REDIRECTed here (SO_ORIGINAL_DST): plain HTTP is relayed and TLS
    /// spliced to the original destination (docs/intercept.md)
    #[arg(long, conflicts_with = "tproxy")]
    pub intercept: bool,
    /// Like --intercept, for TPROXY rules: the listener is IP_TRANSPARENT, the original destination its local address
    #[arg(long)]
    pub tproxy: bool,
    /// With --tproxy: connect upstream from the client's own address
    #[arg(long, requires = "tproxy")]
    pub spoof_source: bool,
    /// With --intercept or --tproxy: relay requests whose Host does not resolve to the original destination
    /// instead of answering 409
    #[arg(long)]
    pub no_host_verify: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ProxyArgs {
    /// The intercepting mode the flags ask for, and what such a listener can't have.
    fn intercept(&self) -> Result<Option<config::Intercept>, String> {
        let mode = match (self.intercept, self.tproxy) {
            (true, _) => config::InterceptMode::Redirect,
            (_, true) => config::InterceptMode::Tproxy,
            _ if self.no_host_verify => return Err("--no-host-verify needs --intercept or --tproxy".into()),
            _ => return Ok(None),
        };
        let flag = format!("--{}", mode.as_str());
        if self.listen.tls {
            return Err(format!("{flag} needs a plain --listen address: intercepted TLS is spliced, never terminated"));
        }
        if self.users.is_some() {
            return Err(format!(
                "{flag} and --users: intercepted clients are not configured for a proxy and can't authenticate"
            ));
        }
        if self.parent.is_some() {
            return Err(format!("{flag} and --parent: intercepted connections go to their original destination"));
        }
        Ok(Some(config::Intercept { mode, host_verify: !self.no_host_verify, spoof_source: self.spoof_source }))
    }
}

/// The certificate of an `https://` listener.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Certificate chain (PEM, end-entity first) for --listen https://
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519) for --listen https://
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The listener's certificates: both flags with `https://`, neither without.
    fn certs(&self, listen: &ListenAddr) -> Result<Vec<CertPair>, String> {
        match (listen.tls, &self.tls_cert, &self.tls_key) {
            (true, Some(cert), Some(key)) => Ok(vec![CertPair { cert: cert.clone(), key: key.clone() }]),
            (true, _, _) => Err("--listen https://... needs --tls-cert PEM and --tls-key PEM".into()),
            (false, None, None) => Ok(Vec::new()),
            (false, _, _) => Err("--tls-cert and --tls-key need --listen https://ADDR".into()),
        }
    }
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// ADDR, http://ADDR or https://ADDR
    #[arg(long, value_parser = config::parse_listen)]
    pub listen: ListenAddr,
    /// http(s)://HOST:PORT[/base], ftp://[USER[:PASS]@]HOST[:PORT][/dir], cgi:DIR, fastcgi://HOST:PORT,
    /// fastcgi+unix:PATH or scgi://HOST:PORT
    #[arg(long, value_parser = Target::parse)]
    pub to: Target,
    /// FastCGI: the document root SCRIPT_FILENAME is resolved under (the script must exist there)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// CGI and FastCGI: the script run for a path ending in / [default for FastCGI: index.php; CGI: none]
    #[arg(long, value_name = "NAME")]
    pub index: Option<String>,
    /// Extra CA bundle (PEM) trusted for an https:// --to; the system roots are always trusted
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl GatewayArgs {
    /// The one route `hopgate gateway` serves: the flags go to the target they belong to (`Target::set`, as
    /// the config file's keys do).
    fn route(&self) -> Result<Route, String> {
        let mut to = self.to.clone();
        let options = [
            self.ca.clone().map(TargetOption::Ca),
            self.root.clone().map(TargetOption::Root),
            self.index.clone().map(TargetOption::Index),
        ];
        for option in options.into_iter().flatten() {
            let flag = format!("--{}", option.key().replace('_', "-"));
            to.set(option).map_err(|e| match e {
                OptionError::Misplaced { which: "https:// routes" } => {
                    format!("{flag} only applies to https:// targets (the proxy's --ca to absolute-form https://)")
                }
                OptionError::Misplaced { which } => format!("{flag} only applies to {which}"),
                OptionError::Invalid(why) => format!("{flag}: {why}"),
            })?;
        }
        Ok(Route::new(to))
    }
}

/// A command-line mistake clap can't see: print it and exit 2, as clap does.
fn usage<T>(r: Result<T, String>) -> Result<T, ExitCode> {
    r.map_err(|e| {
        eprintln!("hopgate: {e}");
        ExitCode::from(2)
    })
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (for example 10.0.0.0/8) or an IP address"))
}

impl Cli {
    /// The config this command line describes; `Err` is an exit code after printing why.
    fn config(&self) -> Result<Config, ExitCode> {
        let mut config = match &self.command {
            None => Config::embedded_default(),
            Some(Command::Run { file }) | Some(Command::Check { file }) => match config::load_file(file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Err(ExitCode::from(2));
                }
            },
            Some(Command::Proxy(p)) => Config::single(Listener {
                // What an intercepting listener can't have is said first (an https:// one needs no certificate).
                intercept: usage(p.intercept())?,
                listen: p.listen,
                certs: usage(p.tls.certs(&p.listen))?,
                proxy: Some(Proxy {
                    allow_targets: p.allow_targets.clone(),
                    connect_ports: if p.connect_ports.is_empty() {
                        config::DEFAULT_CONNECT_PORTS.to_vec()
                    } else {
                        p.connect_ports.clone()
                    },
                    users: p.users.clone(),
                    parent: p.parent.clone(),
                    ca: p.ca.clone(),
                    allow_domains: p.allow_domains.clone(),
                    deny_domains: p.deny_domains.clone(),
                    rates: config::Rates {
                        requests_per_second: p.max_requests_per_second,
                        bytes_per_second: p.max_bytes_per_second,
                    },
                    ..Proxy::default()
                }),
                routes: Vec::new(),
                via_name: None,
                at: None,
                upgrades: config::Upgrades::default(),
            }),
            Some(Command::Tunnel(_)) => Config::embedded_default(),
            Some(Command::Gateway(g)) => Config::single(Listener {
                listen: g.listen,
                certs: usage(g.tls.certs(&g.listen))?,
                proxy: None,
                routes: vec![usage(g.route())?],
                via_name: None,
                at: None,
                upgrades: config::Upgrades::default(),
                intercept: None,
            }),
        };
        if let Some(d) = self.global.drain {
            if !(d.is_finite() && d >= 0.0) {
                eprintln!("hopgate: --drain must be a number of seconds");
                return Err(ExitCode::from(2));
            }
            config.drain = Duration::from_secs_f64(d);
        }
        match self.global.access_log.as_deref() {
            None => {}
            Some("stdout") => config.access_log = AccessLog::Stdout,
            Some("off") => config.access_log = AccessLog::Off,
            Some(p) => config.access_log = AccessLog::File(PathBuf::from(p)),
        }
        if let Some(f) = self.global.access_log_format {
            config.access_log_format = f;
        }
        Ok(config)
    }
}

/// Runs the command line; the exit code is the process's.
pub async fn run(cli: Cli) -> ExitCode {
    if let Some(Command::Tunnel(t)) = &cli.command {
        return tunnel(t).await;
    }
    let config = match cli.config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(Command::Check { file }) = &cli.command {
        return match Server::check(&config) {
            Ok(()) => {
                println!("{}: ok", file.display());
                print!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(e) if e.at.is_some() => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        };
    }
    let server = match Server::bind(&config).await {
        Ok(s) => s,
        Err(e) => {
            // FILE:LINE: reason, as `check` prints it, when the config entry at fault is known.
            match e.at {
                Some(_) => eprintln!("{e}"),
                None => eprintln!("hopgate: {e}"),
            }
            return ExitCode::from(1);
        }
    };
    // Handlers first: from the moment hopgate says it listens, SIGTERM drains instead of killing, and SIGUSR1
    // reopens the access log instead of killing.
    let shutdown = shutdown_signal();
    reopen_log_on_sigusr1(server.access_log());
    for b in server.bound() {
        eprintln!("hopgate: listening on {b}");
    }
    server.run(shutdown).await;
    ExitCode::SUCCESS
}

/// `hopgate tunnel`: errors are one line on stderr and a non-zero exit.
async fn tunnel(t: &TunnelArgs) -> ExitCode {
    let client = match build_tunnel_client(t) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hopgate tunnel: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match t.listen {
        Some(addr) => {
            let shutdown = shutdown_signal();
            let run = client.run_listen(addr, |local| eprintln!("hopgate: listening on tcp://{local}"));
            tokio::select! {
                r = run => r,
                _ = shutdown => Ok(()),
            }
        }
        None => client.run_stdio().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hopgate tunnel: {e}");
            ExitCode::from(1)
        }
    }
}

fn build_tunnel_client(t: &TunnelArgs) -> Result<TunnelClient, crate::tunnel_client::TunnelError> {
    let mut client = TunnelClient::new(&t.proxy, &t.to)?;
    if let Some(u) = &t.proxy_user {
        client.proxy_user = Some(crate::tunnel_client::parse_proxy_user(u)?);
    }
    client.ca = t.ca.clone();
    Ok(client)
}

/// Installs the SIGINT and SIGTERM handlers now (not when first polled: a signal between `listening on` and the
/// first poll would otherwise kill the process instead of draining it) and completes on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            tracing::error!("cannot install signal handlers; stop hopgate with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// SIGUSR1 reopens the access-log file at its path (logrotate's `postrotate`); with the log on stdout or off it
/// does nothing. Installed now, before `listening on`: SIGUSR1's default action would end the process.
fn reopen_log_on_sigusr1(log: Arc<AccessLogger>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    if !log.reopen() {
                        tracing::info!("SIGUSR1: the access log is not a file, nothing to reopen");
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGUSR1 handler (access-log reopening): {e}"),
    }
}

/// Diagnostics go to stderr; RUST_LOG wins over -v/-q.
pub fn init_tracing(global: &Global) {
    let default = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn,hopgate=info",
            1 => "info,hopgate=debug",
            _ => "debug,hopgate=trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
