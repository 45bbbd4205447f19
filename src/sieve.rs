//! `hermod sieve list|get|put|activate|deactivate|delete|check USER`: users' Sieve scripts
//! under `<data_dir>/sieve/`, the same files ManageSieve serves and delivery runs.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use hermod_common::config::LoadOptions;
use hermod_common::directory::User;
use hermod_mda::sieve::store::{ScriptStore, SieveStoreError};

use crate::SieveAction;

/// The user named on the command line, or an error that says so.
async fn user(opts: &LoadOptions, address: &str) -> Result<(hermod_common::Config, User)> {
    let config = crate::admin::load_config(opts)?;
    let dir = crate::admin::open_directory(&config).await?;
    match dir.user(address).await? {
        Some(u) => Ok((config, u)),
        None => bail!("no such user: {address}"),
    }
}

/// The script text of `file`, or standard input for `-` or none.
fn read_source(file: Option<&str>) -> Result<String> {
    let mut bytes = Vec::new();
    match file {
        None | Some("-") => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the script from standard input")?;
        }
        Some(path) => {
            bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        }
    }
    String::from_utf8(bytes).context("the script is not UTF-8")
}

pub async fn sieve(opts: &LoadOptions, action: SieveAction) -> Result<ExitCode> {
    let address = match &action {
        SieveAction::List { user }
        | SieveAction::Get { user, .. }
        | SieveAction::Put { user, .. }
        | SieveAction::Activate { user, .. }
        | SieveAction::Deactivate { user }
        | SieveAction::Delete { user, .. }
        | SieveAction::Check { user, .. } => user.clone(),
    };
    let (config, user) = user(opts, &address).await?;
    let store = ScriptStore::new(&config.data_dir);
    let (local, domain) = (user.localpart.as_str(), user.domain.as_str());
    match action {
        SieveAction::List { .. } => {
            for (name, active) in store.list(local, domain)? {
                if active {
                    println!("{name}\tactive");
                } else {
                    println!("{name}");
                }
            }
        }
        SieveAction::Get { name, .. } => match store.get(local, domain, &name) {
            Ok(source) => print!("{source}"),
            Err(SieveStoreError::NotFound) => bail!("{address} has no script {name:?}"),
            Err(e) => return Err(e.into()),
        },
        SieveAction::Put {
            name,
            file,
            activate,
            ..
        } => {
            let source = read_source(file.as_deref())?;
            let size = source.len() as u64;
            if size > config.sieve.max_script_size {
                bail!(
                    "the script has {size} bytes; [sieve] max_script_size is {}",
                    config.sieve.max_script_size
                );
            }
            match store.put(local, domain, &name, &source) {
                Ok(()) => println!("stored script {name:?} of {address}"),
                Err(SieveStoreError::Compile(e)) => bail!("script {name:?} refused: {e}"),
                Err(e) => return Err(e.into()),
            }
            if activate {
                store.activate(local, domain, &name)?;
                println!("script {name:?} is active");
            }
        }
        SieveAction::Activate { name, .. } => match store.activate(local, domain, &name) {
            Ok(()) => println!("script {name:?} of {address} is active"),
            Err(SieveStoreError::NotFound) => bail!("{address} has no script {name:?}"),
            Err(e) => return Err(e.into()),
        },
        SieveAction::Deactivate { .. } => {
            store.deactivate(local, domain)?;
            println!("no script of {address} is active");
        }
        SieveAction::Delete { name, .. } => match store.delete(local, domain, &name) {
            Ok(()) => println!("deleted script {name:?} of {address}"),
            Err(SieveStoreError::Active) => {
                bail!("script {name:?} is active: deactivate it first")
            }
            Err(SieveStoreError::NotFound) => bail!("{address} has no script {name:?}"),
            Err(e) => return Err(e.into()),
        },
        SieveAction::Check { name, file, .. } => {
            // A file (or stdin) is checked without storing; else the user's stored scripts.
            if let Some(file) = file {
                let source = read_source(Some(&file))?;
                return Ok(match hermod_mda::sieve::compile(&source) {
                    Ok(_) => {
                        println!("{file}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        println!("{file}: {e}");
                        ExitCode::FAILURE
                    }
                });
            }
            let names: Vec<String> = match name {
                Some(n) => vec![n],
                None => store
                    .list(local, domain)?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect(),
            };
            let mut failed = false;
            for name in names {
                let source = match store.get(local, domain, &name) {
                    Ok(s) => s,
                    Err(SieveStoreError::NotFound) => bail!("{address} has no script {name:?}"),
                    Err(e) => return Err(e.into()),
                };
                match hermod_mda::sieve::compile(&source) {
                    Ok(_) => println!("{name}: ok"),
                    Err(e) => {
                        failed = true;
                        println!("{name}: {e}");
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
