//! Plain data types of the store API: flags, message metadata, snapshots, results.

use std::fmt;

/// An IMAP UID (never 0, never reused within one UIDVALIDITY of a mailbox).
pub type Uid = u32;
/// A CONDSTORE modification sequence (per mailbox, strictly increasing).
pub type ModSeq = u64;

/// One IMAP system flag (`\Recent` is not stored: see [`MessageMeta::recent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    Seen,
    Answered,
    Flagged,
    Deleted,
    Draft,
}

impl Flag {
    /// All system flags, in bit order.
    pub const ALL: [Flag; 5] = [
        Flag::Seen,
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Draft,
    ];

    fn bit(self) -> u8 {
        match self {
            Flag::Seen => 1,
            Flag::Answered => 2,
            Flag::Flagged => 4,
            Flag::Deleted => 8,
            Flag::Draft => 16,
        }
    }

    /// The IMAP spelling, e.g. `\Seen`.
    pub fn imap_name(self) -> &'static str {
        match self {
            Flag::Seen => "\\Seen",
            Flag::Answered => "\\Answered",
            Flag::Flagged => "\\Flagged",
            Flag::Deleted => "\\Deleted",
            Flag::Draft => "\\Draft",
        }
    }

    /// Parses an IMAP system flag name, case-insensitively (`\seen` -> Seen).
    pub fn from_imap(name: &str) -> Option<Flag> {
        Flag::ALL
            .into_iter()
            .find(|f| f.imap_name().eq_ignore_ascii_case(name))
    }
}

/// A set of system flags (a small bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const EMPTY: Flags = Flags(0);

    /// The set holding exactly these flags.
    pub fn from_flags(flags: &[Flag]) -> Flags {
        let mut s = Flags::EMPTY;
        for f in flags {
            s.insert(*f);
        }
        s
    }
    pub fn contains(self, f: Flag) -> bool {
        self.0 & f.bit() != 0
    }
    pub fn insert(&mut self, f: Flag) {
        self.0 |= f.bit();
    }
    pub fn remove(&mut self, f: Flag) {
        self.0 &= !f.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn union(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
    pub fn difference(self, o: Flags) -> Flags {
        Flags(self.0 & !o.0)
    }
    /// The flags in the set, in [`Flag::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
    /// Raw bits, as kept in the index.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// From raw bits (unknown bits dropped).
    pub fn from_bits(bits: u8) -> Flags {
        Flags(bits & 0x1f)
    }
}

impl fmt::Display for Flags {
    /// IMAP form without parentheses: `\Seen \Flagged`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for flag in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(flag.imap_name())?;
        }
        Ok(())
    }
}

/// The on-disk mailbox format of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailboxFormat {
    /// Maildir++ under `<data_dir>/mail/<domain>/<localpart>/Maildir/` (default).
    #[default]
    Maildir,
    /// mboxrd: INBOX at a path template, folders under `<user dir>/mbox/`.
    Mbox,
}

/// SPECIAL-USE attributes (RFC 6154) the store keeps per mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    pub const ALL: [SpecialUse; 5] = [
        SpecialUse::Sent,
        SpecialUse::Drafts,
        SpecialUse::Trash,
        SpecialUse::Junk,
        SpecialUse::Archive,
    ];

    /// The IMAP attribute, e.g. `\Sent`.
    pub fn imap_attr(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }

    /// Parses `\Sent` etc., case-insensitively.
    pub fn from_imap(attr: &str) -> Option<SpecialUse> {
        SpecialUse::ALL
            .into_iter()
            .find(|s| s.imap_attr().eq_ignore_ascii_case(attr))
    }

    /// The default folder name created for this use on a user's first open.
    pub fn default_name(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
            SpecialUse::Archive => "Archive",
        }
    }
}

/// One mailbox as LIST shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// UTF-8 name with `/` as hierarchy separator; `INBOX` spelled in capitals.
    pub name: String,
    /// `\Noselect`: a parent that exists only because it has children (no messages of its own).
    pub noselect: bool,
    /// `\HasChildren` (true) / `\HasNoChildren` (false).
    pub has_children: bool,
    /// `\Subscribed`.
    pub subscribed: bool,
    /// SPECIAL-USE attribute, if any.
    pub special_use: Option<SpecialUse>,
}

/// Metadata of one message, as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: Uid,
    pub flags: Flags,
    /// IMAP keywords (e.g. `$Forwarded`, `$Junk`), as given by clients; no duplicates.
    pub keywords: Vec<String>,
    pub modseq: ModSeq,
    /// RFC822.SIZE: the exact size of the bytes `read` returns.
    pub size: u64,
    /// INTERNALDATE in Unix seconds (UTC).
    pub internal_date: i64,
    /// `\Recent`: only meaningful in a [`Snapshot`] from `select`; false elsewhere.
    pub recent: bool,
}

/// A mailbox as seen at SELECT/EXAMINE: one indexed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    /// All messages, ascending UID (sequence number i+1 is `messages[i]`).
    pub messages: Vec<MessageMeta>,
}

/// STATUS counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub messages: u32,
    pub recent: u32,
    pub unseen: u32,
    pub uidnext: Uid,
    pub uidvalidity: u32,
    pub highest_modseq: ModSeq,
    /// Sum of message sizes (STATUS SIZE, RFC 8438).
    pub size: u64,
}

/// How STORE applies the given flags and keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
    /// `FLAGS`
    Replace,
}

/// The result of a STORE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreResult {
    /// Current state of every targeted message that still exists and passed the
    /// UNCHANGEDSINCE test, ascending UID (changed or not: IMAP sends FETCH for them).
    pub messages: Vec<MessageMeta>,
    /// UIDs whose flags actually changed (they got a new modseq).
    pub changed: Vec<Uid>,
    /// UIDs that failed UNCHANGEDSINCE (their modseq was higher): the `[MODIFIED ...]` set.
    pub failed: Vec<Uid>,
}

/// The result of COPY/MOVE, for COPYUID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyResult {
    /// UIDVALIDITY of the destination mailbox.
    pub uidvalidity: u32,
    /// (source uid, destination uid), ascending source uid. Source UIDs that no longer
    /// existed are left out.
    pub pairs: Vec<(Uid, Uid)>,
}

/// The result of APPEND, for APPENDUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub uidvalidity: u32,
    pub uid: Uid,
}

/// What changed in a mailbox after a modseq (CONDSTORE/QRESYNC, IDLE, NOOP).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    /// Messages added or changed with modseq > the given one, ascending UID.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged with modseq > the given one, ascending.
    pub vanished: Vec<Uid>,
}

/// Storage used by one user over all mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    pub bytes: u64,
    pub messages: u64,
}

/// A change notification from [`super::ChangeReceiver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Messages were added, changed or expunged in this mailbox: re-query with
    /// `changes_since`.
    Mailbox(String),
    /// Notifications were lost (slow receiver): re-check every mailbox of interest.
    Resync,
}
