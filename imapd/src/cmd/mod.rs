//! One file per command, as a newcomer looks for them; each adds its handler to
//! [`crate::session::Session`] and keeps its tests beside it.

mod append;
mod authenticate;
mod capability;
mod compress;
mod copy;
mod create;
mod delete;
mod enable;
mod expunge;
mod fetch;
mod fetch_read;
mod id;
mod idle;
pub mod list;
mod login;
mod logout;
mod namespace;
mod quota;
mod rename;
mod search;
pub mod search_eval;
mod search_index;
mod select;
mod sort;
mod starttls;
mod status;
mod store;
mod subscribe;
mod thread;
