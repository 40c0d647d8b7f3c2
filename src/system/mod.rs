//! Everything that touches the host lives below this module.

pub mod exec;
pub mod keystore;
pub mod safefile;
