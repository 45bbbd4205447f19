//! The `hermod` binary: argument parsing only; the work is in the library crates.

mod admin;
mod dkim;
mod privileges;
mod run;
mod sieve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// hermod: a complete mail system (SMTP, submission, IMAP, POP3, Maildir/mbox) in one binary.
#[derive(Parser, Debug)]
#[command(name = "hermod", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes, so they all act on the same data.
#[derive(Args, Debug, Clone)]
struct GlobalOpts {
    /// Config file (default /etc/hermod/hermod.toml; none in --dev unless given).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Zero-config mode: loopback only, data in ./hermod-data, dev ports, self-signed TLS.
    #[arg(long, global = true)]
    dev: bool,
    /// Data directory (overrides the config file's data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run all services in one process.
    Serve,
    /// Run only the MTA (SMTP 25/587/465 and the queue).
    Mta,
    /// Run only the MDA (the LMTP listener).
    Mda,
    /// Run only the IMAP server.
    Imapd,
    /// Run only the POP3 server.
    Pop3d,
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage aliases (`@domain` as source is a catch-all).
    Alias {
        #[command(subcommand)]
        action: AliasAction,
    },
    /// Manage local domains.
    Domain {
        #[command(subcommand)]
        action: DomainAction,
    },
    /// Deliver one message from standard input to a local recipient (an LDA).
    Deliver {
        /// The recipient's address.
        #[arg(long)]
        recipient: String,
        /// The envelope sender (Return-Path).
        #[arg(long)]
        sender: Option<String>,
    },
    /// Inspect and manage the outbound queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Check the configuration and print the effective values.
    CheckConfig,
    /// DKIM signing keys (under the data dir's dkim/).
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Users' Sieve filters (the scripts ManageSieve serves and delivery runs).
    Sieve {
        #[command(subcommand)]
        action: SieveAction,
    },
    /// Print the DNS records to publish for a domain.
    Dns {
        domain: String,
        /// Look the records up and report each as ok, missing or wrong.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Add a user; the password is read without echo, or from stdin.
    Add {
        address: String,
        #[arg(long)]
        password_stdin: bool,
        /// Mailbox quota, e.g. 500M or 2G (default unlimited).
        #[arg(long)]
        quota: Option<String>,
    },
    /// Change a user's password.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's quota (0 = unlimited).
    Quota { address: String, quota: String },
    /// Delete a user (their mail stays on disk).
    Del { address: String },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
enum AliasAction {
    /// Add an alias: mail to SOURCE goes to each TARGET.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Delete an alias, or one of its targets.
    Del {
        source: String,
        target: Option<String>,
    },
    /// List aliases.
    List,
}

#[derive(Subcommand, Debug)]
enum DomainAction {
    /// Add a domain; also makes its DKIM keys (RSA and Ed25519) unless --no-dkim.
    Add {
        domain: String,
        #[arg(long)]
        no_dkim: bool,
    },
    Del {
        domain: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum DkimAction {
    /// Make a key; without --algorithm, an RSA-2048 and an Ed25519 key (dual signatures).
    Generate {
        domain: String,
        /// Selector (default: rsaYYYYMMDD / edYYYYMMDD); needs --algorithm.
        #[arg(long)]
        selector: Option<String>,
        /// rsa or ed25519.
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// List the keys (of one domain, or all).
    List { domain: Option<String> },
    /// Stop signing with a key (it stays on disk as <selector>.retired).
    Retire { domain: String, selector: String },
}

#[derive(Subcommand, Debug)]
enum SieveAction {
    /// List a user's scripts; the active one is marked.
    List { user: String },
    /// Print a script.
    Get { user: String, name: String },
    /// Store a script from FILE (or standard input); it must compile.
    Put {
        user: String,
        name: String,
        file: Option<String>,
        /// Make it the active script too.
        #[arg(long)]
        activate: bool,
    },
    /// Make a script the one delivery runs.
    Activate { user: String, name: String },
    /// Run no script of the user's.
    Deactivate { user: String },
    /// Delete a script (not the active one).
    Delete { user: String, name: String },
    /// Compile the user's scripts (or NAME, or --file F) and report errors with their line.
    Check {
        user: String,
        name: Option<String>,
        #[arg(long)]
        file: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum QueueAction {
    /// List queued messages.
    List,
    /// Show one message's envelope and status.
    Show { id: String },
    /// Retry every deferred message now.
    Flush,
    /// Retry one message now.
    Retry { id: String },
    /// Delete a message from the queue.
    Delete { id: String },
}

fn main() -> ExitCode {
    hermod_common::memory::tune_allocator();
    let cli = Cli::parse();
    let opts = hermod_common::config::LoadOptions {
        config_path: cli.global.config.clone(),
        dev: cli.global.dev,
        data_dir: cli.global.data_dir.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hermod: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => run::daemon(&opts, run::Role::All).await,
            Command::Mta => run::daemon(&opts, run::Role::Mta).await,
            Command::Mda => run::daemon(&opts, run::Role::Mda).await,
            Command::Imapd => run::daemon(&opts, run::Role::Imapd).await,
            Command::Pop3d => run::daemon(&opts, run::Role::Pop3d).await,
            Command::User { action } => admin::user(&opts, action).await,
            Command::Alias { action } => admin::alias(&opts, action).await,
            Command::Domain { action } => admin::domain(&opts, action).await,
            Command::Deliver { recipient, sender } => {
                admin::deliver(&opts, &recipient, sender.as_deref()).await
            }
            Command::Queue { action } => admin::queue(&opts, action).await,
            Command::CheckConfig => admin::check_config(&opts),
            Command::Dkim { action } => dkim::dkim(&opts, action),
            Command::Sieve { action } => sieve::sieve(&opts, action).await,
            Command::Dns { domain, check } => admin::dns(&opts, &domain, check).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hermod: {e:#}");
            ExitCode::FAILURE
        }
    }
}
