//! The WHM API 1 control endpoint: envelope, parameters, callers, dispatch.

pub mod caller;
pub mod envelope;
