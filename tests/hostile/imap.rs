//! IMAP: hostile input before and after login.
