//! SORT and UID SORT with RETURN options (ESORT, RFC 5267 section 3): the answer is an
//! ESEARCH response (MIN, MAX, COUNT, ALL in sort order, PARTIAL pages of the sorted
//! result) instead of `* SORT`.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;

use crate::output::Out;
use crate::search_return::ReturnOptions;
use crate::session::{Reply, Session};

impl Session {
    /// `rest` is the command without its RETURN clause, for imap-codec.
    pub(crate) async fn sort_returning(
        &mut self,
        returns: &ReturnOptions,
        rest: &[u8],
        tag: &str,
        out: &mut Out<'_>,
    ) -> Reply {
        if self.selected.is_none() {
            return Reply::bad("SORT needs a selected mailbox");
        }
        let rest = crate::extended::quoted_8bit_to_literals(rest);
        match CommandCodec::default().decode(&rest) {
            Ok(([], cmd)) => match cmd.body {
                _ if let Some(refused) = self.uidonly_refusal(&cmd.body) => refused,
                CommandBody::Sort {
                    sort_criteria,
                    charset,
                    search_criteria,
                    uid,
                } => {
                    self.sort(
                        sort_criteria.as_ref(),
                        &charset,
                        search_criteria.as_ref(),
                        uid,
                        Some((returns, tag)),
                        out,
                    )
                    .await
                }
                _ => Reply::bad("Invalid SORT"),
            },
            _ => Reply::bad("Invalid SORT arguments"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{Harness, message};

    async fn mailbox(h: &Harness) -> crate::session::Session {
        for (subject, size) in [("c", 30), ("a", 10), ("b", 20), ("a", 40), ("d", 5)] {
            h.deliver("INBOX", &message(subject, &"x".repeat(size)))
                .await;
        }
        h.selected("INBOX").await
    }

    /// imaptest's esort: RETURN (MIN), (MAX), (ALL), (COUNT).
    #[tokio::test]
    async fn sort_return_options() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        let out = h
            .run(
                &mut s,
                "a SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) US-ASCII ALL\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"a\") MIN 2 MAX 5 COUNT 5 ALL 2,4,3,1,5\r\na OK SORT completed\r\n"
        );
        let out = h
            .run(&mut s, "b UID SORT RETURN () (SIZE) UTF-8 2:5\r\n")
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"b\") UID ALL 5,2:4\r\nb OK UID SORT completed\r\n"
        );
        let out = h
            .run(
                &mut s,
                "c SORT RETURN (COUNT) (ARRIVAL) UTF-8 SUBJECT zzz\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"c\") COUNT 0\r\nc OK SORT completed\r\n"
        );
        let out = h
            .run(&mut s, "d SORT RETURN (BOGUS) (ARRIVAL) UTF-8 ALL\r\n")
            .await;
        assert!(out.starts_with("d BAD"), "{out}");
        let out = h.run(&mut s, "e SORT (SUBJECT) UTF-8 ALL\r\n").await;
        assert_eq!(
            out, "* SORT 2 4 3 1 5\r\ne OK SORT completed\r\n",
            "plain SORT unchanged"
        );
    }

    /// imaptest's sort-partial: pages of the sorted result, in sort order.
    #[tokio::test]
    async fn sort_partial_pages() {
        let h = Harness::new().await;
        let mut s = mailbox(&h).await;
        let out = h
            .run(
                &mut s,
                "a SORT RETURN (PARTIAL 4:2) (REVERSE SIZE) US-ASCII ALL\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"a\") PARTIAL (2:4 1,3,2)\r\na OK SORT completed\r\n"
        );
        let out = h
            .run(
                &mut s,
                "b SORT RETURN (PARTIAL -1:-2) (SIZE) US-ASCII ALL\r\n",
            )
            .await;
        assert_eq!(
            out,
            "* ESEARCH (TAG \"b\") PARTIAL (-1:-2 1,4)\r\nb OK SORT completed\r\n"
        );
        let out = h
            .run(
                &mut s,
                "c SORT RETURN (PARTIAL 1:*) (SIZE) US-ASCII ALL\r\n",
            )
            .await;
        assert!(out.starts_with("c BAD"), "{out}");
    }
}
