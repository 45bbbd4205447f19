//! Runs only the IMAP server on loopback for manual tests with real clients:
//! `cargo run -p hermod-imapd --example dev_server -- DATA_DIR [PORT]` (plain IMAP with
//! plaintext logins allowed, and IMAPS on PORT+1), user `alice@localhost` / `secret`.

use std::sync::Arc;

use hermod_common::config::{Config, Service};
use hermod_common::context::Context;
use hermod_common::net::Shutdown;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().ok_or("usage: dev_server DATA_DIR [PORT]")?;
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(2143);
    let mut config = Config::defaults(true);
    config.data_dir = data_dir.into();
    config.allow_plaintext_auth = true;
    config.listen = vec![
        (Service::Imap, vec![format!("127.0.0.1:{port}").parse()?]),
        (
            Service::Imaps,
            vec![format!("127.0.0.1:{}", port + 1).parse()?],
        ),
    ];
    let ctx: Arc<Context> = Context::open(config).await?;
    if ctx.directory.user("alice@localhost").await?.is_none() {
        ctx.directory
            .add_user("alice@localhost", "secret", 0)
            .await?;
    }
    ctx.bind(&[Service::Imap, Service::Imaps])?;
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.trigger();
    });
    hermod_imapd::serve(ctx, shutdown).await?;
    Ok(())
}
