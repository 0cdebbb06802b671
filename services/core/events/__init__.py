"""Events: the envelope, the transactional outbox, the bus and its two backends, and the
consumer runtime (idempotent handlers, retries, dead letters).

At-least-once delivery (outbox relay + acknowledge after handling) plus an idempotent
consumer (processed-event row written in the handler's own transaction) gives each event's
effect exactly once.
"""
