//! The shared state of a running hermod process: config, directory, authentication, TLS,
//! the mail store, and the listening sockets bound before privileges were dropped.
//!
//! `hermod serve` builds one and hands it to every daemon, so they share one store (in-process
//! change notifications) and one login throttle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::Authenticator;
use crate::config::MailboxFormat;
use crate::config::{Config, Service};
use crate::directory::{Directory, DirectoryError};
use crate::net::{BindError, ConnLimiter, ListenerOptions};
use crate::store::{Store, StoreConfig};
use crate::tls::{Tls, TlsError};

/// Errors while preparing the process.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("data dir {path} is not usable: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("config key `mbox_path`: {0}")]
    MboxPath(String),
}

/// Sockets bound per service, before the context exists.
pub type BoundListeners = HashMap<Service, Vec<std::net::TcpListener>>;

/// Bind the configured addresses of these services. The binary calls this as root, before it
/// drops privileges and opens the context as the unprivileged user.
pub fn bind_services(config: &Config, services: &[Service]) -> Result<BoundListeners, BindError> {
    let mut bound = BoundListeners::new();
    for service in services {
        let addrs = config.listen_addrs(*service);
        if !addrs.is_empty() {
            bound.insert(*service, crate::net::bind(*service, addrs)?);
        }
    }
    Ok(bound)
}

/// Everything a daemon needs. Cheap to share as `Arc<Context>`.
pub struct Context {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub auth: Authenticator,
    pub tls: Tls,
    pub store: Store,
    listeners: Mutex<HashMap<Service, Vec<std::net::TcpListener>>>,
    limiters: Mutex<HashMap<Service, Arc<ConnLimiter>>>,
}

/// Make sure the data dir exists and is writable, with an error that names it.
fn check_data_dir(path: &std::path::Path) -> Result<(), ContextError> {
    let err = |source| ContextError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    let probe = path.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// The store's settings from the config. A relative mbox path is relative to the data dir
/// (the `--dev` default keeps mbox spools inside it).
pub fn store_config(config: &Config) -> StoreConfig {
    match config.mailbox_format {
        MailboxFormat::Maildir => StoreConfig::maildir(&config.data_dir),
        MailboxFormat::Mbox => {
            let template = if std::path::Path::new(&config.mbox_path).is_absolute() {
                config.mbox_path.clone()
            } else {
                config
                    .data_dir
                    .join(&config.mbox_path)
                    .display()
                    .to_string()
            };
            StoreConfig::mbox(&config.data_dir, template)
        }
    }
}

impl Context {
    /// Open the data dir, the directory and TLS.
    pub async fn open(config: Config) -> Result<Arc<Context>, ContextError> {
        check_data_dir(&config.data_dir)?;
        let directory = Directory::open(&config.directory_path(), &config.mydestination).await?;
        let domains = directory.list_domains().await?.len();
        config
            .check_mbox_domains(domains)
            .map_err(ContextError::MboxPath)?;
        let tls = Tls::load(&config)?;
        let auth = Authenticator::new(directory.clone(), config.limits.auth_failures_before_delay);
        let store = Store::new(store_config(&config));
        Ok(Arc::new(Context {
            config: Arc::new(config),
            directory,
            auth,
            tls,
            store,
            listeners: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
        }))
    }

    /// Bind the configured addresses of these services.
    pub fn bind(&self, services: &[Service]) -> Result<(), ContextError> {
        let bound = bind_services(&self.config, services)?;
        self.adopt_listeners(bound);
        Ok(())
    }

    /// Take over sockets bound earlier by [`bind_services`] (before privileges were dropped).
    pub fn adopt_listeners(&self, bound: BoundListeners) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for (service, l) in bound {
            listeners.entry(service).or_default().extend(l);
        }
    }

    /// The bound sockets of a service, handed over once to the daemon that serves it.
    pub fn take_listeners(&self, service: Service) -> Vec<std::net::TcpListener> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&service)
            .unwrap_or_default()
    }

    /// Addresses bound and not yet taken, for the start-up log.
    pub fn bound_addrs(&self) -> Vec<(Service, std::net::SocketAddr)> {
        let bound = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for service in Service::ALL {
            for l in bound.get(&service).into_iter().flatten() {
                if let Ok(a) = l.local_addr() {
                    out.push((service, a));
                }
            }
        }
        out
    }

    /// Listener options for a service: its connection limiter (one per service, shared by
    /// its addresses), implicit TLS when the service needs it, and the busy reply.
    pub fn listener_options(&self, service: Service, busy_reply: &'static [u8]) -> ListenerOptions {
        let limiter = self
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service)
            .or_insert_with(|| {
                ConnLimiter::new(
                    self.config.limits.max_connections,
                    self.config.limits.max_connections_per_ip,
                )
            })
            .clone();
        ListenerOptions {
            service,
            limiter,
            implicit_tls: service.implicit_tls().then(|| self.tls.acceptor.clone()),
            busy_reply,
        }
    }

    /// Open connections of a service (for metrics).
    pub fn open_connections(&self, service: Service) -> usize {
        self.limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&service)
            .map_or(0, |l| l.open())
    }
}
