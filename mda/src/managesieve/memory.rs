//! A [`Backend`] with scripts in memory, for the session's tests and the fuzz target:
//! `alice@example.org` logs in with `pw`; a script with a line containing `bogus` does not
//! compile (the error names that line).

use std::collections::BTreeMap;

use crate::managesieve::session::{Backend, BackendError, ScriptEntry};

#[derive(Debug, Default)]
pub struct MemoryBackend {
    pub scripts: BTreeMap<String, String>,
    pub active: Option<String>,
}

impl Backend for MemoryBackend {
    async fn login(&mut self, login: &str, password: &str) -> Result<Option<String>, BackendError> {
        Ok((login == "alice@example.org" && password == "pw").then(|| login.to_string()))
    }
    async fn list(&mut self, _user: &str) -> Result<Vec<ScriptEntry>, BackendError> {
        Ok(self
            .scripts
            .keys()
            .map(|n| ScriptEntry {
                name: n.clone(),
                active: self.active.as_deref() == Some(n),
            })
            .collect())
    }
    async fn get(&mut self, _user: &str, name: &str) -> Result<Option<String>, BackendError> {
        Ok(self.scripts.get(name).cloned())
    }
    async fn put(&mut self, _user: &str, name: &str, source: &str) -> Result<(), BackendError> {
        self.scripts.insert(name.into(), source.into());
        Ok(())
    }
    async fn delete(&mut self, _user: &str, name: &str) -> Result<bool, BackendError> {
        Ok(self.scripts.remove(name).is_some())
    }
    async fn rename(&mut self, _user: &str, old: &str, new: &str) -> Result<(), BackendError> {
        let s = self.scripts.remove(old).unwrap_or_default();
        self.scripts.insert(new.into(), s);
        if self.active.as_deref() == Some(old) {
            self.active = Some(new.into());
        }
        Ok(())
    }
    async fn set_active(&mut self, _user: &str, name: Option<&str>) -> Result<(), BackendError> {
        self.active = name.map(str::to_string);
        Ok(())
    }
    fn compile(&self, source: &str) -> Result<(), String> {
        match source.lines().position(|l| l.contains("bogus")) {
            Some(i) => Err(format!("line {}, column 1: unknown command", i + 1)),
            None => Ok(()),
        }
    }
}
