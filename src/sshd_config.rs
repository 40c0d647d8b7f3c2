//! Parsing of `sshd -T` output and login decisions.
