//! Forwarded mail and SRS: the envelope sender of mail we send on for a local address (an
//! alias to a remote address, a Sieve `redirect`) is rewritten with the Sender Rewriting
//! Scheme when the sender's domain is not ours, so the destination's SPF check sees our
//! domain; bounces to those SRS addresses are accepted at RCPT and go back to the sender.

use std::time::SystemTime;

use hermod_common::{Context, Directory};
use hermod_mda::srs::{Srs, SrsError, is_srs_local_part};

/// SRS settings and the directory that says which domains are ours.
#[derive(Clone)]
pub struct Forwarding {
    srs: Option<Srs>,
    /// `[sieve] srs_domain`: the domain of every SRS address; None: the forwarding address's.
    srs_domain: Option<String>,
    directory: Directory,
}

impl Forwarding {
    /// From the config: SRS unless `[sieve] srs = false`; the key from the config or the
    /// data dir (generated there on first use).
    pub fn from_context(ctx: &Context) -> std::io::Result<Forwarding> {
        let sieve = &ctx.config.sieve;
        let srs = if sieve.srs {
            Some(Srs::load(
                &sieve.srs_secret,
                &ctx.config.data_dir,
                sieve.srs_max_age_days,
            )?)
        } else {
            None
        };
        Ok(Forwarding {
            srs,
            srs_domain: (!sieve.srs_domain.is_empty()).then(|| sieve.srs_domain.clone()),
            directory: ctx.directory.clone(),
        })
    }

    /// Whether `address` is in one of our domains.
    async fn is_local(&self, address: &str) -> bool {
        match address.rsplit_once('@') {
            Some((_, domain)) => self
                .directory
                .is_local_domain(&domain.to_ascii_lowercase())
                .await
                .unwrap_or(false),
            None => true,
        }
    }

    /// The envelope sender for mail from `sender` that we forward on behalf of our address
    /// `via`: an SRS address when the sender is from elsewhere, else the sender itself.
    pub async fn sender_for(&self, sender: &str, via: &str) -> String {
        let Some(srs) = &self.srs else {
            return sender.to_string();
        };
        if sender.is_empty() || self.is_local(sender).await {
            return sender.to_string();
        }
        let domain = match &self.srs_domain {
            Some(d) => d.clone(),
            None => via
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default(),
        };
        if domain.is_empty() {
            return sender.to_string();
        }
        srs.forward(sender, &domain, SystemTime::now())
    }

    /// For an address in one of our domains whose local part is an SRS address: where mail to
    /// it goes (`Ok`), or why it is refused. None when it is not an SRS address (or SRS is off).
    pub fn reverse(&self, address: &str) -> Option<Result<String, SrsError>> {
        let srs = self.srs.as_ref()?;
        let (local, _) = address.rsplit_once('@')?;
        if !is_srs_local_part(local) {
            return None;
        }
        Some(srs.reverse(address, SystemTime::now()))
    }

    /// Whether the address is in one of our domains (for the `local` flag of a recipient).
    pub async fn is_local_address(&self, address: &str) -> bool {
        self.is_local(address).await
    }
}
