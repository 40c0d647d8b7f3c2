//! Everything that touches the host lives below this module.

pub mod accounts;
pub mod exec;
pub mod keystore;
pub mod net;
pub mod processes;
pub mod safefile;
pub mod sessions;
pub mod sshd;
pub mod sudoers;
pub mod users;
