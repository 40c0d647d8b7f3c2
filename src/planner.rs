//! Pure planning of grants, revokes and reconciliation.
