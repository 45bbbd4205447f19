//! hermod-imapd: the IMAP server (being built; not part of this snapshot yet).
