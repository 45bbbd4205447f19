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
            Role::Mta => &[Service::Smtp, Service::Submission, Service::Submissions],
            Role::Mda => &[Service::Lmtp],
            Role::Imapd => &[Service::Imap, Service::Imaps],
            Role::Pop3d => &[Service::Pop3, Service::Pop3s],
        }
    }
}

/// Services whose daemon is built; the others are reported and skipped.
fn built(service: Service) -> bool {
    matches!(service, Service::Lmtp | Service::Pop3 | Service::Pop3s)
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERMOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn daemon(opts: &LoadOptions, role: Role) -> Result<ExitCode> {
    init_logging();
    let started = Instant::now();
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
    let ctx = Context::open(config).await?;
    ctx.bind(&runnable)?;
    let config = ctx.config.clone();
    crate::privileges::chown_for(&config.data_dir, config.run_as_user.as_deref())?;
    if let Some(user) = crate::privileges::drop_to(
        config.run_as_user.as_deref(),
        config.run_as_group.as_deref(),
    )? {
        tracing::info!(user, "dropped privileges");
    }
    for (service, addr) in ctx.bound_addrs() {
        tracing::info!(service = service.name(), %addr, "listening");
    }
    tracing::info!(
        fingerprint = %ctx.tls.fingerprint,
        cert = %ctx.tls.cert_path.display(),
        self_signed = ctx.tls.self_signed,
        "TLS certificate (SHA-256)"
    );
    let shutdown = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    start(&ctx, &runnable, &shutdown, &mut tasks);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        dev = config.dev,
        startup_ms = started.elapsed().as_millis() as u64,
        "hermod started"
    );

    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let failure = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); None }
        Some(r) = tasks.join_next() => Some(r),
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
    shutdown: &Shutdown,
    tasks: &mut tokio::task::JoinSet<Result<()>>,
) {
    let wants = |list: &[Service]| list.iter().any(|s| services.contains(s));
    if wants(&[Service::Lmtp]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_mda::serve(ctx, sd).await?) });
    }
    if wants(&[Service::Pop3, Service::Pop3s]) {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(hermod_pop3d::serve(ctx, sd).await?) });
    }
}
