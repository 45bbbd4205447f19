//! Client account setup documents: Thunderbird's autoconfig (`config-v1.1.xml`) and
//! Microsoft's Autodiscover (POX, `autodiscover.xml`). Both tell a mail client the host,
//! ports, TLS mode and login form of each protocol, so the user types only address and
//! password.

use std::fmt::Write as _;

use crate::config::{Config, Service};

/// How a client connects to one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (993, 995, 465).
    Tls,
    /// Plain connection upgraded with STARTTLS/STLS before login (143, 110, 587).
    StartTls,
}

/// One server entry of the documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `imap`, `pop3` or `smtp`.
    pub protocol: &'static str,
    pub port: u16,
    pub security: Security,
}

/// What the documents announce: this host and the ports it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    pub hostname: String,
    /// In the order clients should prefer them: implicit TLS first (RFC 8314), IMAP first.
    pub incoming: Vec<Endpoint>,
    pub outgoing: Vec<Endpoint>,
}

impl MailSettings {
    /// The settings of a config: `myhostname`, and the first listen port of each service that
    /// is on (in `--dev`, the dev ports).
    pub fn from_config(config: &Config) -> MailSettings {
        let endpoint = |service: Service, protocol, security| {
            config.listen_addrs(service).first().map(|addr| Endpoint {
                protocol,
                port: addr.port(),
                security,
            })
        };
        let incoming = [
            endpoint(Service::Imaps, "imap", Security::Tls),
            endpoint(Service::Imap, "imap", Security::StartTls),
            endpoint(Service::Pop3s, "pop3", Security::Tls),
            endpoint(Service::Pop3, "pop3", Security::StartTls),
        ];
        let outgoing = [
            endpoint(Service::Submissions, "smtp", Security::Tls),
            endpoint(Service::Submission, "smtp", Security::StartTls),
        ];
        MailSettings {
            hostname: config.myhostname.clone(),
            incoming: incoming.into_iter().flatten().collect(),
            outgoing: outgoing.into_iter().flatten().collect(),
        }
    }
}

/// Escape text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Thunderbird's autoconfig document for `domain`. The login is the whole address
/// (`%EMAILADDRESS%`, which Thunderbird fills in), with a cleartext password inside TLS.
pub fn thunderbird(settings: &MailSettings, domain: &str) -> String {
    let domain = xml_escape(domain);
    let host = xml_escape(&settings.hostname);
    let mut out = String::with_capacity(2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<clientConfig version=\"1.1\">\n");
    let _ = writeln!(out, "  <emailProvider id=\"{domain}\">");
    let _ = writeln!(out, "    <domain>{domain}</domain>");
    let _ = writeln!(out, "    <displayName>{domain} mail</displayName>");
    let _ = writeln!(out, "    <displayShortName>{domain}</displayShortName>");
    let servers = settings
        .incoming
        .iter()
        .map(|e| ("incomingServer", e))
        .chain(settings.outgoing.iter().map(|e| ("outgoingServer", e)));
    for (element, e) in servers {
        let socket = match e.security {
            Security::Tls => "SSL",
            Security::StartTls => "STARTTLS",
        };
        let _ = writeln!(out, "    <{element} type=\"{}\">", e.protocol);
        let _ = writeln!(out, "      <hostname>{host}</hostname>");
        let _ = writeln!(out, "      <port>{}</port>", e.port);
        let _ = writeln!(out, "      <socketType>{socket}</socketType>");
        out.push_str("      <authentication>password-cleartext</authentication>\n");
        out.push_str("      <username>%EMAILADDRESS%</username>\n");
        let _ = writeln!(out, "    </{element}>");
    }
    out.push_str("  </emailProvider>\n");
    out.push_str("</clientConfig>\n");
    out
}

/// The `<EMailAddress>` of an Autodiscover request, if the body has one.
pub fn autodiscover_request_address(body: &str) -> Option<String> {
    // The request is a tiny fixed document; finding the one element is all that is needed,
    // and a full XML parser would only widen what untrusted input can reach.
    let lower = body.to_ascii_lowercase();
    let start = lower.find("<emailaddress>")? + "<emailaddress>".len();
    let end = start + lower[start..].find("</emailaddress>")?;
    let address = body[start..end].trim();
    crate::address::Address::parse(address)
        .ok()
        .map(|_| address.to_string())
}

/// Microsoft's Autodiscover (Outlook "POX" schema) answer. `address` is the login when
/// known; without it the client asks the user.
pub fn autodiscover(settings: &MailSettings, address: Option<&str>) -> String {
    let host = xml_escape(&settings.hostname);
    let mut out = String::with_capacity(2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(
        "<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n",
    );
    out.push_str(
        "  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n",
    );
    out.push_str("    <Account>\n");
    out.push_str("      <AccountType>email</AccountType>\n");
    out.push_str("      <Action>settings</Action>\n");
    for e in settings.incoming.iter().chain(&settings.outgoing) {
        let kind = match e.protocol {
            "imap" => "IMAP",
            "pop3" => "POP3",
            _ => "SMTP",
        };
        out.push_str("      <Protocol>\n");
        let _ = writeln!(out, "        <Type>{kind}</Type>");
        let _ = writeln!(out, "        <Server>{host}</Server>");
        let _ = writeln!(out, "        <Port>{}</Port>", e.port);
        out.push_str("        <DomainRequired>off</DomainRequired>\n");
        if let Some(a) = address {
            let _ = writeln!(out, "        <LoginName>{}</LoginName>", xml_escape(a));
        }
        out.push_str("        <SPA>off</SPA>\n");
        match e.security {
            Security::Tls => out.push_str("        <SSL>on</SSL>\n"),
            Security::StartTls => out.push_str("        <Encryption>TLS</Encryption>\n"),
        }
        out.push_str("        <AuthRequired>on</AuthRequired>\n");
        if kind == "SMTP" {
            out.push_str("        <UsePOPAuth>off</UsePOPAuth>\n");
            out.push_str("        <SMTPLast>off</SMTPLast>\n");
        }
        out.push_str("      </Protocol>\n");
    }
    out.push_str("    </Account>\n");
    out.push_str("  </Response>\n");
    out.push_str("</Autodiscover>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MailSettings {
        let mut c = Config::defaults(true);
        c.myhostname = "mail.example.org".into();
        MailSettings::from_config(&c)
    }

    fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> &'a str {
        node.children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .unwrap_or_else(|| panic!("no <{name}>"))
    }

    #[test]
    fn thunderbird_document_names_host_ports_and_tls() {
        let xml = thunderbird(&settings(), "example.org");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let provider = doc
            .descendants()
            .find(|n| n.has_tag_name("emailProvider"))
            .unwrap();
        assert_eq!(provider.attribute("id"), Some("example.org"));
        assert_eq!(child_text(provider, "domain"), "example.org");
        let servers: Vec<(String, String, u16, String, String)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("incomingServer") || n.has_tag_name("outgoingServer"))
            .map(|n| {
                assert_eq!(child_text(n, "hostname"), "mail.example.org");
                assert_eq!(child_text(n, "authentication"), "password-cleartext");
                (
                    n.attribute("type").unwrap().to_string(),
                    child_text(n, "socketType").to_string(),
                    child_text(n, "port").parse().unwrap(),
                    child_text(n, "username").to_string(),
                    n.tag_name().name().to_string(),
                )
            })
            .collect();
        let summary: Vec<(&str, &str, u16)> = servers
            .iter()
            .map(|(t, s, p, _, _)| (t.as_str(), s.as_str(), *p))
            .collect();
        // --dev ports, IMAP over TLS first.
        assert_eq!(
            summary,
            vec![
                ("imap", "SSL", 2993),
                ("imap", "STARTTLS", 2143),
                ("pop3", "SSL", 2995),
                ("pop3", "STARTTLS", 2110),
                ("smtp", "SSL", 2465),
                ("smtp", "STARTTLS", 2587),
            ]
        );
        assert!(servers.iter().all(|s| s.3 == "%EMAILADDRESS%"));
        assert_eq!(servers[4].4, "outgoingServer");
    }

    #[test]
    fn services_that_are_off_are_not_announced() {
        let mut c = Config::defaults(false);
        c.myhostname = "mx.example.net".into();
        for (service, addrs) in c.listen.iter_mut() {
            if matches!(service, Service::Pop3 | Service::Pop3s | Service::Imap) {
                addrs.clear();
            }
        }
        let s = MailSettings::from_config(&c);
        let ports: Vec<u16> = s
            .incoming
            .iter()
            .chain(&s.outgoing)
            .map(|e| e.port)
            .collect();
        assert_eq!(ports, vec![993, 465, 587]);
    }

    #[test]
    fn autodiscover_document_parses() {
        let xml = autodiscover(&settings(), Some("alice@example.org"));
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let protocols: Vec<(String, u16, String)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("Protocol"))
            .map(|n| {
                assert_eq!(child_text(n, "Server"), "mail.example.org");
                assert_eq!(child_text(n, "LoginName"), "alice@example.org");
                let tls = n
                    .children()
                    .find(|c| c.has_tag_name("SSL") || c.has_tag_name("Encryption"))
                    .map(|c| format!("{}={}", c.tag_name().name(), c.text().unwrap()))
                    .unwrap();
                (
                    child_text(n, "Type").to_string(),
                    child_text(n, "Port").parse().unwrap(),
                    tls,
                )
            })
            .collect();
        assert!(protocols.contains(&("IMAP".into(), 2993, "SSL=on".into())));
        assert!(protocols.contains(&("SMTP".into(), 2587, "Encryption=TLS".into())));
        assert!(protocols.contains(&("POP3".into(), 2995, "SSL=on".into())));
    }

    #[test]
    fn request_address_is_found_and_validated() {
        let body = r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.org</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
        assert_eq!(
            autodiscover_request_address(body).as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(
            autodiscover_request_address("<EMailAddress><x>@y</EMailAddress>"),
            None
        );
        assert_eq!(autodiscover_request_address("nothing"), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        let xml = thunderbird(&settings(), "ex<ample");
        assert!(roxmltree::Document::parse(&xml).is_ok());
    }
}
