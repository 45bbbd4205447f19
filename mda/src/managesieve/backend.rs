//! The session backend on hermod: logins through the shared authenticator (throttled, with
//! the cap on concurrent password checks), scripts in the Sieve [`ScriptStore`], and the
//! interpreter's compiler for PUTSCRIPT and CHECKSCRIPT.

use std::net::IpAddr;
use std::sync::Arc;

use hermod_common::Context;
use hermod_common::directory::User;

use crate::managesieve::session::{Backend, BackendError, ScriptEntry};
use crate::sieve::store::{ScriptStore, SieveStoreError};

/// A [`Backend`] on the real store, one per connection.
pub struct StoreBackend {
    ctx: Arc<Context>,
    peer: IpAddr,
    scripts: ScriptStore,
    /// The logged-in user (the session passes its address back with each call).
    user: Option<User>,
}

impl StoreBackend {
    pub fn new(ctx: Arc<Context>, peer: IpAddr) -> StoreBackend {
        let scripts = ScriptStore::new(&ctx.config.data_dir);
        StoreBackend {
            ctx,
            peer,
            scripts,
            user: None,
        }
    }

    /// Run a store operation for the logged-in user off the runtime (it reads, writes and
    /// fsyncs files).
    async fn with_user<T: Send + 'static>(
        &self,
        user: &str,
        op: impl FnOnce(&ScriptStore, &str, &str) -> Result<T, SieveStoreError> + Send + 'static,
    ) -> Result<T, SieveStoreError> {
        let Some(u) = self.user.as_ref().filter(|u| u.address == user) else {
            return Err(SieveStoreError::InvalidUser);
        };
        let (store, localpart, domain) =
            (self.scripts.clone(), u.localpart.clone(), u.domain.clone());
        tokio::task::spawn_blocking(move || op(&store, &localpart, &domain))
            .await
            .map_err(|e| SieveStoreError::Io(std::io::Error::other(e.to_string())))?
    }
}

fn backend_error(e: SieveStoreError) -> BackendError {
    BackendError(e.to_string())
}

impl Backend for StoreBackend {
    async fn login(&mut self, login: &str, password: &str) -> Result<Option<String>, BackendError> {
        let user = self
            .ctx
            .auth
            .verify(login, password, self.peer)
            .await
            .map_err(|e| BackendError(format!("directory: {e}")))?;
        let address = user.as_ref().map(|u| u.address.clone());
        self.user = user;
        Ok(address)
    }

    async fn list(&mut self, user: &str) -> Result<Vec<ScriptEntry>, BackendError> {
        let list = self
            .with_user(user, |s, l, d| s.list(l, d))
            .await
            .map_err(backend_error)?;
        Ok(list
            .into_iter()
            .map(|(name, active)| ScriptEntry { name, active })
            .collect())
    }

    async fn get(&mut self, user: &str, name: &str) -> Result<Option<String>, BackendError> {
        let name = name.to_string();
        match self
            .with_user(user, move |s, l, d| s.get(l, d, &name))
            .await
        {
            Ok(source) => Ok(Some(source)),
            Err(SieveStoreError::NotFound | SieveStoreError::InvalidName) => Ok(None),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn put(&mut self, user: &str, name: &str, source: &str) -> Result<(), BackendError> {
        let (name, source) = (name.to_string(), source.to_string());
        self.with_user(user, move |s, l, d| s.put(l, d, &name, &source))
            .await
            .map_err(backend_error)
    }

    async fn delete(&mut self, user: &str, name: &str) -> Result<bool, BackendError> {
        let name = name.to_string();
        match self
            .with_user(user, move |s, l, d| s.delete(l, d, &name))
            .await
        {
            Ok(()) => Ok(true),
            Err(SieveStoreError::NotFound) => Ok(false),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn rename(&mut self, user: &str, old: &str, new: &str) -> Result<(), BackendError> {
        let (old, new) = (old.to_string(), new.to_string());
        self.with_user(user, move |s, l, d| s.rename(l, d, &old, &new))
            .await
            .map_err(backend_error)
    }

    async fn set_active(&mut self, user: &str, name: Option<&str>) -> Result<(), BackendError> {
        let name = name.map(str::to_string);
        self.with_user(user, move |s, l, d| match name {
            Some(n) => s.activate(l, d, &n),
            None => s.deactivate(l, d),
        })
        .await
        .map_err(backend_error)
    }

    fn compile(&self, source: &str) -> Result<(), String> {
        crate::sieve::compile(source)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
