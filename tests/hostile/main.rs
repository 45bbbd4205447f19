//! Hostile clients against the real `hermod serve`: inputs an attacker would send must get a
//! clear protocol error or a dropped connection, never a crash, a stall or unbounded memory,
//! and the server must keep serving everyone else.

#[path = "../common/mod.rs"]
mod common;

mod big_mail;
mod hashing;
mod imap;
mod smtp;
