//! `hermod dkim generate|list|retire`: the DKIM signing keys under `<data_dir>/dkim/`, and the
//! keys `hermod domain add` makes and `hermod dns` publishes.

use std::process::ExitCode;

use anyhow::{Result, bail};
use hermod_common::config::{Config, LoadOptions};
use hermod_common::dns_records::DkimKey;
use hermod_mta::auth::keys::{Algorithm, KeyStore, StoredKey};

use crate::DkimAction;

fn store(config: &Config) -> Result<KeyStore> {
    crate::privileges::enter_data_dir(config)?;
    Ok(KeyStore::new(&config.data_dir))
}

/// Today as `YYYYMMDD` (UTC), for default selectors.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

fn describe(key: &StoredKey) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        key.domain,
        key.selector,
        key.algorithm.key_type(),
        if key.retired { "retired" } else { "active" }
    )
}

/// Makes `domain`'s keys: both algorithms (dual signatures) unless one is named.
pub fn generate(
    store: &KeyStore,
    domain: &str,
    selector: Option<&str>,
    algorithm: Option<Algorithm>,
) -> Result<Vec<StoredKey>> {
    let algorithms = match algorithm {
        Some(a) => vec![a],
        None => vec![Algorithm::Rsa, Algorithm::Ed25519],
    };
    if selector.is_some() && algorithms.len() > 1 {
        bail!("--selector names one key: give --algorithm rsa or --algorithm ed25519 with it");
    }
    let date = today();
    let mut made = Vec::new();
    for a in algorithms {
        let selector = selector
            .map(str::to_string)
            .unwrap_or_else(|| a.default_selector(&date));
        made.push(store.generate(domain, &selector, a)?);
    }
    Ok(made)
}

/// `hermod domain add` makes a key pair unless told not to.
pub fn keys_for_new_domain(config: &Config, domain: &str) -> Result<()> {
    let store = store(config)?;
    if !store.active(domain)?.is_empty() {
        return Ok(());
    }
    for key in generate(&store, domain, None, None)? {
        println!(
            "DKIM key {} ({}) made; publish it with `hermod dns {domain}`",
            key.selector,
            key.algorithm.key_type()
        );
    }
    Ok(())
}

/// The active keys of `domain`, as `hermod dns` publishes them.
pub fn published(config: &Config, domain: &str) -> Result<Vec<DkimKey>> {
    let store = KeyStore::new(&config.data_dir);
    Ok(store
        .active(domain)?
        .iter()
        .map(StoredKey::dns_record)
        .collect())
}

pub fn dkim(opts: &LoadOptions, action: DkimAction) -> Result<ExitCode> {
    let config = Config::load(opts)?;
    let store = store(&config)?;
    match action {
        DkimAction::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let algorithm = match algorithm.as_deref() {
                None => None,
                Some(a) => Some(
                    Algorithm::parse(a)
                        .ok_or_else(|| anyhow::anyhow!("--algorithm is rsa or ed25519"))?,
                ),
            };
            for key in generate(&store, &domain, selector.as_deref(), algorithm)? {
                println!("generated {}", describe(&key));
            }
            println!("publish the new records: hermod dns {domain}");
        }
        DkimAction::List { domain } => {
            for key in store.list(domain.as_deref())? {
                println!("{}", describe(&key));
            }
        }
        DkimAction::Retire { domain, selector } => {
            store.retire(&domain, &selector)?;
            println!("retired {selector} of {domain}: it signs no more mail");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_plausible_date() {
        let t = today();
        assert_eq!(t.len(), 8);
        assert!(t.as_str() >= "20250101", "{t}");
    }
}
