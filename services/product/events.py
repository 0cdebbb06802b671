"""What the product service publishes (through the core's
:class:`~services.core.events.publisher.Publisher`).

The names, topic and payloads are the contract in :mod:`kommerce.contracts.events.product`
(topic ``product.events``). Every event goes through the shard's outbox in the transaction
that made the change. The service consumes nothing yet: the checkout saga calls the
reservation API directly.
"""
