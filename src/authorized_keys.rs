//! Pure authorized_keys line editing.
