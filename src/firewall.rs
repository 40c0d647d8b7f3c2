//! Firewall whitelist backends.
