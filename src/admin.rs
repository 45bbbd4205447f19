//! The admin subcommands: users, aliases, domains, config check. They open the same
//! directory database as the daemons and work while those run.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use hermod_common::config::{Config, LoadOptions};
use hermod_common::directory::Directory;

use crate::{AliasAction, DomainAction, QueueAction, UserAction};

pub fn load_config(opts: &LoadOptions) -> Result<Config> {
    Ok(Config::load(opts)?)
}

pub async fn open_directory(config: &Config) -> Result<Directory> {
    crate::privileges::enter_data_dir(config)?;
    let path = config.directory_path();
    Directory::open(&path, &config.mydestination)
        .await
        .with_context(|| format!("cannot open the directory {}", path.display()))
}

/// Parse a size like `500M`, `2G`, `1048576`, `0`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("invalid size {s:?}: use a number with K, M, G or T"),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid size {s:?}"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

fn read_password(from_stdin: bool, address: &str) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("Password for {address}: "))
            .context("cannot read the password (use --password-stdin without a terminal)")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    };
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(password)
}

pub async fn user(opts: &LoadOptions, action: UserAction) -> Result<ExitCode> {
    let config = load_config(opts)?;
    let dir = open_directory(&config).await?;
    match action {
        UserAction::Add {
            address,
            password_stdin,
            quota,
        } => {
            let quota = quota.as_deref().map(parse_size).transpose()?.unwrap_or(0);
            // Validate before asking for a password the admin would type for nothing.
            let parsed = hermod_common::Address::parse(&address)?;
            if !dir.is_local_domain(&parsed.domain).await? {
                bail!(
                    "domain {} is not a local domain (add it with `hermod domain add {}`)",
                    parsed.domain,
                    parsed.domain
                );
            }
            let password = read_password(password_stdin, &address)?;
            let user = dir.add_user(&address, &password, quota).await?;
            println!("added user {}", user.address);
        }
        UserAction::Passwd {
            address,
            password_stdin,
        } => {
            if dir.user(&address).await?.is_none() {
                bail!("no such user: {address}");
            }
            let password = read_password(password_stdin, &address)?;
            dir.set_password(&address, &password).await?;
            println!("password changed for {address}");
        }
        UserAction::Quota { address, quota } => {
            dir.set_quota(&address, parse_size(&quota)?).await?;
            println!("quota of {address} set to {quota}");
        }
        UserAction::Del { address } => {
            dir.del_user(&address).await?;
            println!(
                "deleted user {address} (mail left in {})",
                config.data_dir.join("mail").display()
            );
        }
        UserAction::List => {
            for u in dir.list_users().await? {
                let quota = if u.quota_bytes == 0 {
                    "unlimited".to_string()
                } else {
                    format!("{} bytes", u.quota_bytes)
                };
                let state = if u.enabled { "" } else { " (disabled)" };
                println!("{}\tquota {quota}{state}", u.address);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn alias(opts: &LoadOptions, action: AliasAction) -> Result<ExitCode> {
    let config = load_config(opts)?;
    let dir = open_directory(&config).await?;
    match action {
        AliasAction::Add { source, targets } => {
            for t in &targets {
                dir.add_alias(&source, t).await?;
            }
            println!("added alias {source} -> {}", targets.join(", "));
        }
        AliasAction::Del { source, target } => {
            dir.del_alias(&source, target.as_deref()).await?;
            println!("deleted alias {source}");
        }
        AliasAction::List => {
            for a in dir.list_aliases().await? {
                println!("{}\t{}", a.source, a.targets.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn domain(opts: &LoadOptions, action: DomainAction) -> Result<ExitCode> {
    let config = load_config(opts)?;
    let dir = open_directory(&config).await?;
    match action {
        DomainAction::Add { domain, no_dkim } => {
            let known = dir.list_domains().await?;
            let new = !known
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain.trim_end_matches('.')));
            if let Err(m) = config.check_mbox_domains(known.len() + usize::from(new)) {
                bail!("cannot add {domain}: config key `mbox_path` {m}");
            }
            let d = dir.add_domain(&domain).await?;
            println!("added domain {d}");
            if !no_dkim {
                crate::dkim::keys_for_new_domain(&config, &d)?;
            }
        }
        DomainAction::Del { domain } => {
            if config
                .mydestination
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&domain))
            {
                bail!("{domain} is in mydestination of the config; remove it there");
            }
            dir.del_domain(&domain).await?;
            println!("deleted domain {domain}");
        }
        DomainAction::List => {
            for d in dir.list_domains().await? {
                println!("{d}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check_config(opts: &LoadOptions) -> Result<ExitCode> {
    let config = load_config(opts)?;
    print!("{}", config.to_toml());
    Ok(ExitCode::SUCCESS)
}

/// sysexits(3): temporary failure, what an MTA retries.
const EX_TEMPFAIL: u8 = 75;

/// The local delivery agent: one message from stdin to one local recipient. Exit codes follow
/// sysexits(3) as MTAs expect (0 delivered, 67 unknown user, 75 try again later).
pub async fn deliver(
    opts: &LoadOptions,
    recipient: &str,
    sender: Option<&str>,
) -> Result<ExitCode> {
    let setup = async {
        let config = load_config(opts)?;
        let limit = config.message_size_limit;
        crate::privileges::enter_data_dir(&config)?;
        let ctx = hermod_common::Context::open(config).await?;
        anyhow::Ok((ctx, limit))
    };
    let (ctx, limit) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("hermod deliver: 451 4.3.0 {e:#}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    // Read at most one byte more than the limit: enough to know the message is too big. A
    // big message goes to a spool file as it is read, never whole into memory.
    let spool = hermod_mda::lda::spool_dir();
    let input = match hermod_mda::lda::read_input(tokio::io::stdin(), limit, &spool).await {
        Ok(input) => input,
        Err(e) => {
            eprintln!("hermod deliver: 451 4.3.0 cannot read the message: {e}");
            return Ok(ExitCode::from(EX_TEMPFAIL));
        }
    };
    let code = hermod_mda::lda::deliver_input(&ctx, recipient, sender, input).await;
    Ok(ExitCode::from(code))
}

/// The outbound queue tools. They work on the queue database while the daemon runs; it
/// notices flushes and deletions within seconds.
pub async fn queue(opts: &LoadOptions, action: QueueAction) -> Result<ExitCode> {
    use hermod_mta::queue::listing;
    let config = load_config(opts)?;
    crate::privileges::enter_data_dir(&config)?;
    let queue = hermod_mta::Queue::open(hermod_mta::queue_dir(&config))
        .await
        .context("cannot open the queue")?;
    let parse_id = |id: &str| {
        hermod_mta::QueueId::parse(id).with_context(|| format!("invalid queue id {id:?}"))
    };
    match action {
        QueueAction::List => print!("{}", listing::mailq(&queue.list().await?)),
        QueueAction::Show { id } => match queue.show(&parse_id(&id)?).await? {
            Some(m) => print!("{}", listing::details(&m)),
            None => bail!("no such queued message: {id}"),
        },
        QueueAction::Flush => {
            let n = queue.flush().await?;
            println!("{n} recipient(s) scheduled for delivery now");
        }
        QueueAction::Retry { id } => {
            if !queue.retry(&parse_id(&id)?).await? {
                bail!("no such queued message: {id}");
            }
            println!("{id} scheduled for delivery now");
        }
        QueueAction::Delete { id } => {
            if !queue.delete(&parse_id(&id)?).await? {
                bail!("no such queued message: {id}");
            }
            println!("{id} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print the DNS records to publish for `domain`, or (`--check`) look them up and report each.
pub async fn dns(opts: &LoadOptions, domain: &str, check: bool) -> Result<ExitCode> {
    use hermod_common::dns_records;
    let config = load_config(opts)?;
    let domain = hermod_common::config::check_domain(domain).map_err(anyhow::Error::msg)?;
    if check {
        let keys = crate::dkim::published(&config, &domain)?;
        let results = dns_records::check(&config, &domain, &keys).await?;
        print!("{}", dns_records::render_check(&results));
        return Ok(if dns_records::all_ok(&results) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    print!(
        "{}",
        dns_records::render_zone(&dns_records::records(
            &config,
            &domain,
            &crate::dkim::published(&config, &domain)?
        ))
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }
}
