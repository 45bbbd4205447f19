//! QUOTA (RFC 9208): one root, "", holding the user's storage quota.

use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::mailbox::Mailbox;

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    /// `* QUOTA "" (STORAGE used limit)` in KiB, when the user has a quota.
    async fn write_quota(&self, out: &mut Out<'_>) -> Result<bool, Reply> {
        let (Some(user), Some(account)) = (self.user(), self.account.as_ref()) else {
            return Err(Reply::no("Not logged in"));
        };
        if account.quota_bytes == 0 {
            return Ok(false);
        }
        let usage = user.quota_usage().await.map_err(Reply::from)?;
        out.untagged(&format!(
            "QUOTA \"\" (STORAGE {} {})",
            usage.bytes.div_ceil(1024),
            account.quota_bytes / 1024
        ));
        Ok(true)
    }

    pub(crate) async fn get_quota_root(
        &mut self,
        mailbox: &Mailbox<'_>,
        out: &mut Out<'_>,
    ) -> Reply {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return r,
        };
        let has_quota = self.account.as_ref().is_some_and(|a| a.quota_bytes > 0);
        out.put(b"* QUOTAROOT ");
        self.write_name(out.buf(), &name);
        out.put(if has_quota { b" \"\"\r\n" } else { b"\r\n" });
        match self.write_quota(out).await {
            Ok(_) => Reply::ok("GETQUOTAROOT completed"),
            Err(r) => r,
        }
    }

    pub(crate) async fn get_quota(&mut self, root: &AString<'_>, out: &mut Out<'_>) -> Reply {
        let root: &[u8] = root.as_ref();
        if !root.is_empty() {
            return Reply::no("No such quota root").code("NONEXISTENT");
        }
        match self.write_quota(out).await {
            Ok(true) => Reply::ok("GETQUOTA completed"),
            Ok(false) => Reply::no("No quota").code("NONEXISTENT"),
            Err(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    #[tokio::test]
    async fn reports_usage_against_the_users_quota() {
        let h = Harness::new().await;
        h.deliver("INBOX", &message("m", &"x".repeat(3000))).await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "q GETQUOTAROOT INBOX\r\n").await;
        assert!(
            out.starts_with("* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 4 976)\r\n"),
            "{out}"
        );
        let out = h.run(&mut s, "r GETQUOTA \"\"\r\n").await;
        assert!(out.contains("r OK"), "{out}");
        assert!(
            h.run(&mut s, "s SETQUOTA \"\" (STORAGE 1)\r\n")
                .await
                .starts_with("s NO")
        );
    }
}
