//! API token storage (filled in by the token work).
