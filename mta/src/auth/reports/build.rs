//! Turning a day's stored rows into report messages, with mail-auth's report types (the XML
//! and JSON schemas, gzip, the RFC 5322 message around them).

use std::collections::BTreeMap;

use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, Summary, TlsReport,
};
use mail_auth::report::{PolicyPublished, Record, Report};
use serde::{Deserialize, Serialize};

use super::store::Kind;

/// Who sends the reports.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `org_name` / `organization-name`.
    pub org_name: String,
    /// From address and contact (`postmaster@<myorigin>` unless configured).
    pub from: String,
    /// The submitter (myhostname), in subjects and file names.
    pub submitter: String,
}

/// What the DMARC rows of one domain share: where to report, what the domain published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DmarcTarget {
    pub rua: Vec<String>,
    pub policy: PolicyPublished,
}

/// First and last second of day `day` (UTC).
pub fn day_range(day: i64) -> (i64, i64) {
    (day * 86_400, day * 86_400 + 86_399)
}

fn report_id(kind: Kind, day: i64, domain: &str) -> String {
    let tag = match kind {
        Kind::Dmarc => "dmarc",
        Kind::Tls => "tlsrpt",
    };
    format!("{tag}.{day}.{domain}.{:016x}", rand::random::<u64>())
}

/// The DMARC aggregate report of `domain` for `day` from its rows: (rua addresses, message).
/// None when the rows are unreadable or name nowhere to send to.
pub fn dmarc_report(
    reporter: &Reporter,
    day: i64,
    domain: &str,
    rows: &[(String, String, u64)],
) -> Option<(Vec<String>, Vec<u8>)> {
    // Every row carries the policy as published when it was seen; the last one read wins.
    let target: DmarcTarget = rows
        .iter()
        .rev()
        .find_map(|(a, _, _)| serde_json::from_str(a).ok())?;
    let rua: Vec<String> = target.rua.iter().filter_map(|u| mailto(u)).collect();
    if rua.is_empty() {
        return None;
    }
    let (begin, end) = day_range(day);
    let mut report = Report::new()
        .with_version(1.0)
        .with_org_name(&reporter.org_name)
        .with_email(&reporter.from)
        .with_report_id(report_id(Kind::Dmarc, day, domain))
        .with_date_range_begin(begin as u64)
        .with_date_range_end(end as u64)
        .with_policy_published(target.policy);
    let mut merged: BTreeMap<String, (Record, u64)> = BTreeMap::new();
    for (_, b, count) in rows {
        if let Ok(record) = serde_json::from_str::<Record>(b) {
            merged
                .entry(b.clone())
                .and_modify(|(_, c)| *c += count)
                .or_insert((record, *count));
        }
    }
    for (_, (record, count)) in merged {
        report.add_record(record.with_count(count.min(u32::MAX as u64) as u32));
    }
    let message = report
        .to_rfc5322(
            &reporter.submitter,
            reporter.from.as_str(),
            rua.iter().map(String::as_str),
        )
        .ok()?;
    Some((rua, message.into_bytes()))
}

/// The TLS report (RFC 8460) of `domain` for `day`, to `rua` (mailto: addresses only).
pub fn tls_report(
    reporter: &Reporter,
    day: i64,
    domain: &str,
    rows: &[(String, String, u64)],
    rua: &[String],
) -> Option<Vec<u8>> {
    let (begin, end) = day_range(day);
    let mut policies: BTreeMap<String, Policy> = BTreeMap::new();
    for (a, b, count) in rows {
        let Ok(details) = serde_json::from_str::<PolicyDetails>(a) else {
            continue;
        };
        let count = (*count).min(u32::MAX as u64) as u32;
        let policy = policies.entry(a.clone()).or_insert_with(|| Policy {
            policy: details,
            summary: Summary {
                total_success: 0,
                total_failure: 0,
            },
            failure_details: Vec::new(),
        });
        if b.is_empty() {
            policy.summary.total_success = policy.summary.total_success.saturating_add(count);
        } else if let Ok(mut failure) = serde_json::from_str::<FailureDetails>(b) {
            policy.summary.total_failure = policy.summary.total_failure.saturating_add(count);
            failure.failed_session_count = count;
            policy.failure_details.push(failure);
        }
    }
    if policies.is_empty() {
        return None;
    }
    let report = TlsReport {
        organization_name: Some(reporter.org_name.clone()),
        date_range: DateRange::from_timestamps(begin, end),
        contact_info: Some(reporter.from.clone()),
        report_id: report_id(Kind::Tls, day, domain),
        policies: policies.into_values().collect(),
    };
    report
        .to_rfc5322(
            domain,
            &reporter.submitter,
            reporter.from.as_str(),
            rua.iter().map(String::as_str),
        )
        .ok()
        .map(String::into_bytes)
}

/// The address of a `mailto:` report URI (size limits and other schemes dropped).
pub fn mailto(uri: &str) -> Option<String> {
    let address = uri.strip_prefix("mailto:").unwrap_or(uri);
    let address = address.split('!').next()?.trim();
    let ok = !address.contains("://")
        && address.len() <= 254
        && address
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !address
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>' || b == b',');
    ok.then(|| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::report::tlsrpt::{PolicyType, ResultType};
    use mail_auth::report::{ActionDisposition, DmarcResult};

    fn reporter() -> Reporter {
        Reporter {
            org_name: "mx.hermod.test".into(),
            from: "postmaster@hermod.test".into(),
            submitter: "mx.hermod.test".into(),
        }
    }

    #[test]
    fn mailto_uris() {
        assert_eq!(
            mailto("mailto:dmarc@example.org!10m").as_deref(),
            Some("dmarc@example.org")
        );
        assert_eq!(
            mailto("dmarc@example.org").as_deref(),
            Some("dmarc@example.org")
        );
        assert_eq!(mailto("https://report.example.org/v1"), None);
        assert_eq!(mailto("mailto:a@b\r\nBcc: x@y.z"), None);
    }

    #[test]
    fn a_dmarc_report_parses_back_with_its_counts() {
        let target = DmarcTarget {
            rua: vec!["mailto:rua@sender.test".into()],
            policy: PolicyPublished::from_record(
                "sender.test",
                &<mail_auth::dmarc::Dmarc as mail_auth::common::parse::TxtRecordParser>::parse(
                    b"v=DMARC1; p=reject; rua=mailto:rua@sender.test",
                )
                .unwrap(),
            ),
        };
        let a = serde_json::to_string(&target).unwrap();
        let record = Record::new()
            .with_source_ip("192.0.2.7".parse().unwrap())
            .with_header_from("sender.test")
            .with_action_disposition(ActionDisposition::Reject)
            .with_dmarc_dkim_result(DmarcResult::Fail)
            .with_dmarc_spf_result(DmarcResult::Fail);
        let b = serde_json::to_string(&record).unwrap();
        let rows = vec![(a.clone(), b.clone(), 3), (a, b, 2)];
        let (rua, message) = dmarc_report(&reporter(), 20_000, "sender.test", &rows).unwrap();
        assert_eq!(rua, ["rua@sender.test"]);
        let parsed = Report::parse_rfc5322(&message, 1 << 20).expect("parses as a DMARC report");
        assert_eq!(parsed.domain(), "sender.test");
        assert_eq!(parsed.org_name(), "mx.hermod.test");
        assert_eq!(parsed.date_range_begin(), 20_000 * 86_400);
        assert_eq!(parsed.records().len(), 1);
        assert_eq!(parsed.records()[0].count(), 5);
        assert_eq!(
            parsed.records()[0].action_disposition(),
            ActionDisposition::Reject
        );
    }

    #[test]
    fn a_tls_report_parses_back_with_successes_and_failures() {
        let mut details = PolicyDetails {
            policy_type: PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), "mode: enforce".into()],
            policy_domain: "remote.test".into(),
            mx_host: vec!["mx1.remote.test".into()],
        };
        let a = serde_json::to_string(&details).unwrap();
        let failure = FailureDetails::new(ResultType::CertificateNotTrusted)
            .with_receiving_mx_hostname("mx1.remote.test");
        let b = serde_json::to_string(&failure).unwrap();
        let rows = vec![(a.clone(), String::new(), 7), (a, b, 2)];
        let message = tls_report(
            &reporter(),
            20_000,
            "remote.test",
            &rows,
            &["tls@remote.test".into()],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&message);
        assert!(
            text.contains("report-type=\"tlsrpt\"") || text.contains("report-type=tlsrpt"),
            "{text}"
        );
        assert!(text.contains("TLS-Report-Domain: remote.test"), "{text}");
        let parsed = TlsReport::parse_rfc5322(&message, 1 << 20).expect("parses as a TLS report");
        assert_eq!(parsed.policies.len(), 1);
        let p = &parsed.policies[0];
        assert_eq!(p.summary.total_success, 7);
        assert_eq!(p.summary.total_failure, 2);
        assert_eq!(p.failure_details[0].failed_session_count, 2);
        details.mx_host.clear();
        assert_eq!(p.policy.policy_domain, "remote.test");
    }
}
