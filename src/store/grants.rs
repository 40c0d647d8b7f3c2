//! Grant rows: the desired state of access.
