"""The gateway: the platform's single entry point, the reference's Kong in Python.

Every ``/api/...`` request is matched to a route of the operator-rendered route table (the
longest path prefix on a segment boundary), checked for its method, caller and rate, and
forwarded to the service unchanged — same path, query and body, streamed both ways. What a
client can get from the gateway itself, always in the core's ``{"code", "message",
"details"}`` shape:

======  =====================  =============================================================
status  code                   when
======  =====================  =============================================================
400     invalid_path           the path has ``.``/``..`` segments (they would reach another
                               route than the one checked)
401     token_missing, …       the route needs a token and none came, or a sent token is
                               invalid, expired or not an access token
404     route_not_found        no route covers the path
405     method_not_allowed     the route does not take the method (``Allow`` names those it
                               does; HEAD comes with GET)
413     payload_too_large      the body is over ``max_request_body_bytes``
429     rate_limited           the route's per-minute limit for this user (or, anonymous,
                               this address) is used up; ``Retry-After`` says how long
502     upstream_unreachable   the service cannot be connected to
503     circuit_open           the service's breaker is open (``Retry-After``)
504     upstream_timeout       the service did not answer within its breaker timeout
======  =====================  =============================================================

Passed requests carry ``X-User-Id``/``X-User-Roles`` from the verified token (never from the
client), ``X-Request-Id`` and ``X-Forwarded-For/-Proto/-Host``; limited routes answer with
``X-RateLimit-Limit``/``X-RateLimit-Remaining``. CORS preflights are answered here from
``KOMMERCE_CORS_ORIGINS``.

========================  ==================================================================
module                    what it holds
========================  ==================================================================
``settings``              ``GatewaySettings`` (route table path, local service URLs, limits)
``routes``                the route table model, loading and longest-prefix matching
``service``               ``Gateway``: route (404/405), caller (401), rate (429) decisions
``ratelimit``             the Redis sliding-window limiter shared by all replicas
``proxy``                 header hygiene and streaming forwarding through the core client
``api``                   the catch-all ``/api/...`` route tying them together
``app``                   ``create_app()`` on ``services.core.app.create_service_app``;
                          ``python -m services.gateway`` serves it
========================  ==================================================================
"""
