//! NAMESPACE (RFC 2342): one personal namespace, "/" as separator.

use crate::output::Out;
use crate::session::{Reply, Session};

impl Session {
    pub(crate) fn namespace(&mut self, out: &mut Out<'_>) -> Reply {
        out.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
        Reply::ok("NAMESPACE completed")
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Harness;

    #[tokio::test]
    async fn personal_namespace() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "n NAMESPACE\r\n").await;
        assert_eq!(
            out,
            "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nn OK NAMESPACE completed\r\n"
        );
    }
}
