//! The `[auth]` section: mail authentication (DKIM signing; SPF, DKIM, DMARC, ARC and iprev
//! verification on port 25) and what hermod does with the results. Not to be confused with
//! login authentication (`crate::auth`).

use serde::{Deserialize, Serialize};

/// Mail authentication settings. Every check can be turned off on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuthConfig {
    /// Verify mail arriving on port 25 and add an `Authentication-Results` header.
    pub verify: bool,
    /// Verify mail from `mynetworks` clients too (off: they are trusted like submitters).
    pub verify_mynetworks: bool,
    /// SPF (RFC 7208) of the MAIL FROM and HELO identities.
    pub spf: bool,
    /// Refuse at MAIL FROM when the sender's SPF record says `-all` for the client (`fail`).
    pub spf_refuse_fail: bool,
    /// Verify every DKIM signature (RFC 6376).
    pub dkim: bool,
    /// DMARC (RFC 7489): alignment of SPF and DKIM with the From domain.
    pub dmarc: bool,
    /// Honour `p=reject`: refuse with `550 5.7.1` at the end of DATA.
    pub dmarc_reject: bool,
    /// Honour `p=quarantine`: deliver into the recipient's Junk folder.
    pub dmarc_quarantine: bool,
    /// Verify the ARC chain (RFC 8617).
    pub arc: bool,
    /// Seal mail from the internet that an alias forwards to a remote address with an ARC
    /// set (RFC 8617), using the RSA DKIM key of `mydomain`.
    pub arc_seal: bool,
    /// Reverse DNS of the client, confirmed forward (RFC 8601 `iprev`).
    pub iprev: bool,
    /// Refuse mail from outside whose From is one of our domains and does not pass DMARC.
    pub refuse_local_spoofing: bool,
    /// DKIM-sign mail leaving for remote domains from authenticated users and `mynetworks`,
    /// with the keys under `<data_dir>/dkim/<domain>/`.
    pub sign: bool,
    /// Honour the MTA-STS policies (RFC 8461) of the domains we send to.
    pub mta_sts: bool,
    /// The MTA-STS policy hermod serves for its own domains at
    /// `https://mta-sts.<domain>/.well-known/mta-sts.txt` (the HTTP listener): `testing`
    /// (report only), `enforce`, or `none`.
    pub mta_sts_mode: StsMode,
    /// MX host patterns of that policy; empty: `myhostname`.
    pub mta_sts_mx: Vec<String>,
    /// `max_age` of that policy, in seconds.
    pub mta_sts_max_age: u64,
    /// Where other servers send TLS reports (RFC 8460) about our domains, printed by
    /// `hermod dns` as the `_smtp._tls` record; empty: `mailto:postmaster@<domain>`.
    pub tls_rpt_rua: Vec<String>,
    /// Send DMARC aggregate reports (RFC 7489 7.2) once a day to domains that ask (`rua=`).
    pub dmarc_reports: bool,
    /// Send TLS reports (RFC 8460) once a day to the domains we deliver to that ask.
    pub tls_reports: bool,
    /// The organization named in reports; empty: `myhostname`.
    pub report_org_name: String,
    /// From and envelope sender of reports; empty: `postmaster@<myorigin>`.
    pub report_from: String,
}

/// The mode of the MTA-STS policy hermod publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StsMode {
    Enforce,
    Testing,
    None,
}

impl StsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

impl Default for MailAuthConfig {
    fn default() -> Self {
        MailAuthConfig {
            verify: true,
            verify_mynetworks: false,
            spf: true,
            spf_refuse_fail: false,
            dkim: true,
            dmarc: true,
            dmarc_reject: true,
            dmarc_quarantine: true,
            arc: true,
            arc_seal: true,
            iprev: true,
            refuse_local_spoofing: true,
            sign: true,
            mta_sts: true,
            mta_sts_mode: StsMode::Testing,
            mta_sts_mx: Vec::new(),
            mta_sts_max_age: 604_800,
            tls_rpt_rua: Vec::new(),
            dmarc_reports: false,
            tls_reports: false,
            report_org_name: String::new(),
            report_from: String::new(),
        }
    }
}

impl MailAuthConfig {
    /// The section as `hermod check-config` prints it.
    pub fn render(&self) -> String {
        format!(
            "\n[auth]\nverify = {}\nverify_mynetworks = {}\nspf = {}\nspf_refuse_fail = {}\ndkim = {}\ndmarc = {}\ndmarc_reject = {}\ndmarc_quarantine = {}\narc = {}\narc_seal = {}\niprev = {}\nrefuse_local_spoofing = {}\nsign = {}\nmta_sts = {}\nmta_sts_mode = \"{}\"\nmta_sts_mx = {:?}\nmta_sts_max_age = {}\ntls_rpt_rua = {:?}\ndmarc_reports = {}\ntls_reports = {}\nreport_org_name = {:?}\nreport_from = {:?}\n",
            self.verify,
            self.verify_mynetworks,
            self.spf,
            self.spf_refuse_fail,
            self.dkim,
            self.dmarc,
            self.dmarc_reject,
            self.dmarc_quarantine,
            self.arc,
            self.arc_seal,
            self.iprev,
            self.refuse_local_spoofing,
            self.sign,
            self.mta_sts,
            self.mta_sts_mode.as_str(),
            self.mta_sts_mx,
            self.mta_sts_max_age,
            self.tls_rpt_rua,
            self.dmarc_reports,
            self.tls_reports,
            self.report_org_name,
            self.report_from
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_section_keeps_the_other_defaults_and_unknown_keys_are_refused() {
        let c: MailAuthConfig = toml::from_str("spf_refuse_fail = true\nsign = false\n").unwrap();
        assert!(c.spf_refuse_fail);
        assert!(!c.sign);
        assert!(c.verify && c.dkim && c.dmarc_reject);
        let err = toml::from_str::<MailAuthConfig>("spff = true\n").unwrap_err();
        assert!(err.to_string().contains("spff"), "{err}");
    }
}
