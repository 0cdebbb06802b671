"""What the payment service publishes: the names, topic and payload are the contract in
:mod:`kommerce.contracts.events.payment` (topic ``payment.events``, keyed by order id so an
order's payment events stay in order; ids, amounts, brand and last four digits, never card
data), published through the core's :class:`~services.core.events.publisher.Publisher`.
"""
