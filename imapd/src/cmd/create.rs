//! CREATE (RFC 3501 section 6.3.3), with `(USE (...))` of CREATE-SPECIAL-USE (RFC 6154).

use hermod_common::store::SpecialUse;
use imap_codec::imap_types::mailbox::Mailbox;

use crate::session::{Reply, Session};

impl Session {
    pub(crate) async fn create(&mut self, mailbox: &Mailbox<'_>) -> Reply {
        match self.mailbox_name(mailbox) {
            Ok(name) => self.create_named(name, None).await,
            Err(r) => r,
        }
    }

    /// CREATE with a USE list (read by `extended`).
    pub(crate) async fn create_extended(&mut self, raw_name: &[u8], uses: &[String]) -> Reply {
        if self.account.is_none() {
            return Reply::no("CREATE needs a login first");
        }
        let special = match uses {
            [] => None,
            [one] => match SpecialUse::from_imap(one) {
                Some(u) => Some(u),
                None => return Reply::no(format!("Unsupported special use {one}")).code("USEATTR"),
            },
            _ => return Reply::no("Only one special use per mailbox").code("USEATTR"),
        };
        match self.decode_name(raw_name) {
            Ok(name) => self.create_named(name, special).await,
            Err(r) => r,
        }
    }

    async fn create_named(&mut self, mut name: String, special: Option<SpecialUse>) -> Reply {
        // A trailing separator only says children will follow (RFC 3501).
        while name.len() > 1 && name.ends_with('/') {
            name.pop();
        }
        let Some(user) = self.user() else {
            return Reply::no("Not logged in");
        };
        match user.create(&name, special).await {
            // OBJECTID (RFC 8474 section 4.1): the new mailbox's id.
            Ok(()) => match user.mailbox_id(&name).await {
                Ok(id) => Reply::ok("CREATE completed").code(format!("MAILBOXID ({id})")),
                Err(_) => Reply::ok("CREATE completed"),
            },
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn create_plain_nested_and_special_use() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let created = |tag: &str, out: &str| {
            // OBJECTID (RFC 8474): the new mailbox's MAILBOXID comes with the OK.
            out.starts_with(&format!("{tag} OK [MAILBOXID (M"))
                && out.ends_with(")] CREATE completed\r\n")
        };
        let out = h.run(&mut s, "a CREATE Work/2024/\r\n").await;
        assert!(created("a", &out), "{out}");
        assert_eq!(
            h.run(&mut s, "b CREATE Work/2024\r\n").await,
            "b NO [ALREADYEXISTS] Mailbox already exists\r\n"
        );
        let out = h
            .run(&mut s, "c CREATE \"Old Mail\" (USE (\\Archive))\r\n")
            .await;
        assert!(created("c", &out), "{out}");
        let out = h.run(&mut s, "d CREATE Stuff (USE (\\Bogus))\r\n").await;
        assert!(out.starts_with("d NO [USEATTR]"), "{out}");
        let out = h.run(&mut s, "e CREATE INBOX\r\n").await;
        assert!(out.starts_with("e NO"), "{out}");
        let out = h.run(&mut s, "f CREATE &Jjo-\r\n").await;
        assert!(created("f", &out), "{out}");
        let out = h.run(&mut s, "g CREATE &Jjo\r\n").await;
        assert!(
            out.starts_with("g NO [CANNOT]"),
            "bad modified UTF-7: {out}"
        );
        let out = h.run(&mut s, "h CREATE ../etc\r\n").await;
        assert!(out.starts_with("h NO"), "{out}");
        let names: Vec<String> = h
            .user()
            .await
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(
            names.contains(&"Work/2024".to_string()) && names.contains(&"☺".to_string()),
            "{names:?}"
        );
    }
}
