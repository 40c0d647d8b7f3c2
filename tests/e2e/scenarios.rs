//! The scenarios of issue 7, against the real daemon; each starts from a
//! [`Scene`](super::scene::Scene).

pub mod access;
pub mod crash;
pub mod disk;
pub mod doctor;
pub mod firewall;
pub mod logins;
pub mod metrics;
pub mod mix;
pub mod package;
pub mod powerloss;
