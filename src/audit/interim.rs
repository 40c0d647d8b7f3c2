//! TEMPORARY: the engine's view of the writer until the audit branch lands.
use super::writer::{AuditError, ChainHead};
use super::{AuditEvent, AuditLog};

impl AuditLog {
    pub async fn append_closing(
        &self,
        events: &[AuditEvent],
    ) -> Result<Option<ChainHead>, AuditError> {
        self.append_batch_head_deferred(events).await
    }
    pub async fn head_committed(&self, _head: &ChainHead) {}
}
