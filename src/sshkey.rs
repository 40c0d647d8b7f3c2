//! Support SSH public keys.
