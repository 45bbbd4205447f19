//! One file per command, as a newcomer looks for them; each adds its handler to
//! [`crate::session::Session`] and keeps its tests beside it.

mod append;
mod authenticate;
mod binary;
mod capability;
pub mod catenate;
mod compress;
mod copy;
mod create;
mod delete;
mod enable;
mod esort;
mod expunge;
mod fetch;
pub mod fetch_partial;
mod fetch_read;
mod id;
mod idle;
pub mod list;
mod login;
mod logout;
mod namespace;
mod quota;
mod rename;
pub(crate) mod search;
pub mod search_eval;
mod search_index;
mod select;
pub(crate) mod sort;
mod starttls;
mod status;
mod store;
mod subscribe;
mod thread;
