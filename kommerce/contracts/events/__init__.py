"""Every event one service publishes and another consumes: its name, its topic and its
payload, versioned.

Why a contract: a publisher and its consumers used to spell an event's name as a string
literal each and read its payload as an untyped dict, so nothing but an end-to-end test
noticed when one side changed. Here each publishing service has one module with its topic,
its event names and one payload model per event; the publisher builds the payload from the
model (:meth:`~kommerce.contracts.events.base.EventPayload.wire`) and the consumer reads it
back through the same model (:meth:`~kommerce.contracts.events.base.EventPayload.parse`),
which refuses a payload that does not fit with :class:`~.base.InvalidPayload` (dead-lettered
by the consumer, never applied).

=============  ==================  =====================================================
module         topic               events
=============  ==================  =====================================================
``order``      ``order.events``    ``order.saga_command`` (its own), ``order.status_changed``
``payment``    ``payment.events``  ``payment.succeeded`` / ``failed`` / ``action_required``
                                   / ``refunded`` / ``canceled``
``product``    ``product.events``  ``product.created`` / ``updated`` / ``deleted``,
                                   ``price.changed``, ``stock.changed``,
                                   ``inventory.reserved`` / ``committed`` / ``released``
``review``     ``review.events``   ``review.created``, ``review.approved``,
                                   ``rating.changed``
``shipping``   ``shipping.events`` ``shipment.created`` / ``cancelled`` /
                                   ``status_changed`` / ``delivered``
``user``       ``user.events``     ``user.registered``, ``user.updated``
=============  ==================  =====================================================

A payload may gain optional fields without a new version (consumers ignore fields they do
not know and default the ones they miss); anything else is a new ``schema_version``, which
a consumer that does not know it refuses rather than misreads. Importing this package loads
no module of it.
"""
