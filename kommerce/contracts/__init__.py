"""What crosses a process boundary, defined once: the operators write these formats and the
services read them (or one service publishes an event and another consumes it).

One module per contract; each imports only pydantic and the standard library, so an
operator, a service and a test can import it without pulling in the other side:

=====================  ==========================================================
``route_table``        the gateway's route table (CommerceService operator → gateway)
``breaker``            client circuit-breaker settings (CircuitBreakerPolicy → every
                       service's HTTP client)
``shard_map``          the product catalog's shard map and its hash (ShardLayout →
                       product service)
``release``            the release a BlueGreenRollout declares on its CommerceService
                       (rollout operator → CommerceService operator), and the colours
``mounts``             where a Pod finds what the operators write for it
``events``             every event between services: names, topics, versioned payloads
=====================  ==========================================================

This file imports nothing on purpose: importing one contract must not load the others.
"""
