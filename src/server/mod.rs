//! Listeners for the control endpoint.
