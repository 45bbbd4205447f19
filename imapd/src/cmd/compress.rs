//! COMPRESS DEFLATE (RFC 4978). The OK goes out uncompressed; then the loop switches both
//! directions to raw deflate.

use crate::session::{Next, Reply, Session, Sync};

impl Session {
    pub(crate) fn compress(&mut self) -> Reply {
        if !self.shared.settings.compress {
            return Reply::bad("COMPRESS is not supported");
        }
        if self.compressed {
            return Reply::no("DEFLATE is already active").code("COMPRESSIONACTIVE");
        }
        self.next = Next::Compress;
        Reply::ok("DEFLATE active").sync(Sync::Skip)
    }
}

#[cfg(test)]
mod tests {
    use crate::session::Next;
    use crate::testing::Harness;

    #[tokio::test]
    async fn switches_once() {
        let h = Harness::new().await;
        let mut s = h.session(true);
        h.login(&mut s).await;
        let out = h.run(&mut s, "c COMPRESS DEFLATE\r\n").await;
        assert_eq!(out, "c OK DEFLATE active\r\n");
        assert_eq!(s.next, Next::Compress);
        s.compression_started();
        let out = h.run(&mut s, "d COMPRESS DEFLATE\r\n").await;
        assert!(out.starts_with("d NO [COMPRESSIONACTIVE]"), "{out}");
    }
}
