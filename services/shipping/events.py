"""What the shipping service publishes: the names, topic and payload are the contract in
:mod:`kommerce.contracts.events.shipping` (topic ``shipping.events``, keyed by order id),
published through the core's :class:`~services.core.events.publisher.Publisher`.
"""
