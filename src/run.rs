//! Running the daemons: load the config, open the shared state, bind, drop privileges,
//! start the services of the chosen role, and shut down cleanly on SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hermod_common::config::LoadOptions;
use hermod_common::{Config, Context, Service, Shutdown};
use tokio::signal::unix::{SignalKind, signal};

/// How long sessions may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

/// Which daemons this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Mta,
    Mda,
    Imapd,
    Pop3d,
}

impl Role {
    fn services(self) -> &'static [Service] {
        match self {
            Role::All => &Service::ALL,
            // The MTA also serves HTTP (autoconfig, health, metrics) in the split setup.
            Role::Mta => &[
                Service::Smtp,
                Service::Submission,
                Service::Submissions,
                Service::Http,
            ],
            Role::Mda => &[Service::Lmtp, Service::ManageSieve],
            Role::Imapd => &[Service::Imap, Service::Imaps],
            Role::Pop3d => &[Service::Pop3, Service::Pop3s],
        }
    }
}

/// Services whose daemon is built; the others are reported and skipped.
fn built(service: Service) -> bool {
    matches!(
        service,
        Service::Lmtp
            | Service::Pop3
            | Service::Pop3s
            | Service::Smtp
            | Service::Submission
            | Service::Submissions
            | Service::Imap
            | Service::Imaps
            | Service::Http
            | Service::ManageSieve
    )
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERMOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn daemon(opts: &LoadOptions, role: Role) -> Result<ExitCode> {
    init_logging();
    let started = Instant::now();
    // Watch signals first: a SIGHUP during start-up must not kill the process.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let config = Config::load(opts)?;
    let wanted: Vec<Service> = role
        .services()
        .iter()
        .copied()
        .filter(|s| !config.listen_addrs(*s).is_empty())
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|s| !built(**s))
        .map(|s| s.name())
        .collect();
    let runnable: Vec<Service> = wanted.iter().copied().filter(|s| built(*s)).collect();
    if runnable.is_empty() {
        anyhow::bail!(
            "no daemon of this command is built yet (not yet available: {})",
            missing.join(", ")
        );
    }
    if !missing.is_empty() {
        tracing::warn!(services = %missing.join(", "), "not built yet; not started");
    }
    // Ports and the LMTP socket are bound as root; then privileges go, then the data is opened.
    let bound = hermod_common::context::bind_services(&config, &runnable)?;
    let lmtp_socket = match (&config.lmtp_socket, runnable.contains(&Service::Lmtp)) {
        (Some(path), true) => Some(hermod_mda::lmtp::bind_socket(path)?),
        _ => None,
    };
    // The ACME challenge port (443) too; one process orders, the others follow its files.
    let acme_listeners = match role {
        Role::All | Role::Mta => hermod_common::acme::bind(&config)?,
        _ => Vec::new(),
    };
    if let Some(user) = crate::privileges::enter_data_dir(&config)? {
        tracing::info!(user, "dropped privileges");
    }
    let ctx = Context::open(config).await?;
    ctx.adopt_listeners(bound);
    let config = ctx.config.clone();
    for (service, addr) in ctx.bound_addrs() {
        tracing::info!(service = service.name(), %addr, "listening");
    }
    tracing::info!(
        fingerprint = %ctx.tls.fingerprint(),
        cert = %ctx.tls.cert_path.display(),
        self_signed = ctx.tls.self_signed,
        "TLS certificate (SHA-256)"
    );
    let shutdown = Shutdown::new();
    // Installs a stored ACME certificate now, so the services start with it.
    hermod_common::acme::start(&ctx, acme_listeners, &shutdown)?;
    let mut tasks = tokio::task::JoinSet::new();
    start(&ctx, &runnable, lmtp_socket, &shutdown, &mut tasks);
    {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tokio::spawn(hermod_common::memory::trim_after_closes(
            move || Service::ALL.iter().map(|s| ctx.open_connections(*s)).sum(),
            sd,
        ));
    }
    tracing::info!(
        data_dir = %config.data_dir.display(),
        dev = config.dev,
        startup_ms = started.elapsed().as_millis() as u64,
        "hermod started"
    );

    let failure = loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break None }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break None }
            _ = sighup.recv() => match hermod_common::acme::reload(&ctx) {
                Ok(fingerprint) => tracing::info!(%fingerprint, "SIGHUP: certificate reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: certificate not reloaded; keeping the old one"),
            },
            Some(r) = tasks.join_next() => break Some(r),
        }
    };
    shutdown.trigger();
    let clean = shutdown.wait(GRACE).await;
    if !clean {
        tracing::warn!(
            grace_s = GRACE.as_secs(),
            "sessions still open after the grace time; closing them"
        );
    }
    match failure {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("a daemon panicked: {e}")),
        _ => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Start each daemon that serves one of `services` (once, even if it serves several).
fn start(
    ctx: &Arc<Context>,
    services: &[Service],
    lmtp_socket: Option<hermod_mda::lmtp::LmtpSocket>,
    shutdown: &Shutdown,
    tasks: &mut tokio::task::JoinSet<Result<()>>,
) {
    let wants = |list: &[Service]| list.iter().any(|s| services.contains(s));
    if wants(&[Service::Lmtp]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(
            async move { Ok(hermod_mda::lmtp::serve_with_socket(ctx, sd, lmtp_socket).await?) },
        );
    }
    if wants(&[Service::Smtp, Service::Submission, Service::Submissions]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_mta::serve(ctx, sd).await?) });
    }
    if wants(&[Service::Imap, Service::Imaps]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            // What users file into and out of Junk teaches rspamd (`[spam]`).
            let learner = hermod_mta::filter::learn::Learner::start(&ctx.config, &sd)?;
            let feedback =
                learner.map(|l| l as Arc<dyn hermod_common::junk_feedback::JunkFeedback>);
            Ok(hermod_imapd::serve_with(ctx, sd, feedback).await?)
        });
    }
    if wants(&[Service::Http]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_common::http::serve(ctx, sd).await?) });
    }
    if wants(&[Service::ManageSieve]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_mda::managesieve::serve(ctx, sd).await?) });
    }
    if wants(&[Service::Pop3, Service::Pop3s]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_pop3d::serve(ctx, sd).await?) });
    }
}
