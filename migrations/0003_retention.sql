-- Retention: the purge finds conversations expired long enough ago, and
-- idempotency keys old enough, without scanning.
CREATE INDEX conversations_expired ON conversations (expired_at) WHERE expired_at IS NOT NULL;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
