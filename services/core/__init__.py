"""The shared service core: one copy of everything every Kommerce service needs.

Every service under ``services/`` has the same rooms:

* ``__main__.py`` — ``python -m services.<name>``: :func:`services.core.app.serve`
  (search's is a command group with ``serve``);
* ``app.py`` — ``create_app()`` on :func:`services.core.app.create_service_app`, a lifespan
  hook that builds the service's objects and puts them on ``app.state`` through
  :class:`~services.core.state.AppState` slots, and the module-level ``app`` for uvicorn
  (:func:`services.core.app.lazy_app`);
* ``api.py`` — routes only, and the slots its routes depend on;
* ``service.py`` — the rules, no FastAPI and no SQL;
* ``repository.py`` — the SQL, as module functions on the caller's session (user's is a
  class over its session);
* ``models.py`` (tables), ``schemas.py`` (request and response models), ``settings.py``
  (a ``ServiceSettings`` subclass), ``migrations/`` (Alembic revisions);
* ``events.py`` — what it publishes and consumes: the names and payloads are the contracts in
  :mod:`kommerce.contracts.events`; functions named for the event build each envelope, and
  the service writes it with ``add_event`` in the transaction of the change it describes.

What a service adds beyond that lives in modules named for it: order's ``saga.py``,
``orchestrator.py``, ``participants.py`` and ``cart.py``, product's ``inventory.py``,
shipping's ``carriers.py`` and ``rates.py``, search's engines, review's ``moderation.py`` and
``purchases.py``, payment's ``providers/`` (one module per provider). The asyncpg fast paths
(order's saga steps) are named functions in the service's ``repository.py``, next to the ORM
queries. The gateway has no database, so no repository, models or migrations.

Import from the modules themselves; this package re-exports nothing, so importing one piece
never drags in the others.

========================  ==================================================================
module                    what a service author uses
========================  ==================================================================
``settings``              ``ServiceSettings`` (subclass it; env prefix ``KOMMERCE_``)
``app``                   ``create_service_app``, ``Consume``, ``ServiceRuntime``,
                          ``lazy_app``, ``serve``; dependencies ``Runtime``, ``CacheDep``
``state``                 ``AppState[T](name)``: one typed ``app.state`` attribute; ``put``
                          in the lifespan, a dependency (or ``of(request)``) in routes;
                          ``SETTINGS`` (the core's own slots: ``db.DATABASE``,
                          ``health.READINESS_CHECKS``, ``app.RUNTIME``, ``auth.TOKENS``)
``db``                    ``new_metadata`` (per-service ``Base``), ``Database``
                          (``database.session()``: the service layer opens one per
                          operation), ``create_engine``
``migrations``            ``Migrations(branch, versions_dir, metadata)``, ``upgrade``;
                          ``python -m services.core.migrations upgrade|revision|current``
``cache``                 ``Cache.get_or_load`` / ``get_or_load_json`` / ``invalidate`` /
                          ``invalidate_prefix``; ``scoped(name, near=True)`` keeps
                          in-process copies (``NearCache``)
``events.envelope``       ``EventEnvelope.new(type, source=, key=, payload=)``
``events.outbox``         ``add_event(session, envelope)``: into the outbox, in the
                          caller's transaction
``events.consumer``       ``EventHandlers`` (``@handlers.on("type")``), ``PoisonEvent``
``transient``             ``RetryLater``, ``is_transient``
``auth``                  ``TokenService``, ``hash_password``/``verify_password``,
                          ``CurrentUser``, ``OptionalUser``, ``AdminUser``, ``require_role``
``errors``                ``NotFound``, ``Conflict``, ``InvalidRequest``, ``Forbidden``,
                          ``Unauthorized``, ``TooManyRequests``, ``ServiceUnavailable``
``http``                  ``runtime.http.client(target, base_url)`` → ``ServiceClient``
``breaker``               ``CircuitBreaker``, ``BreakerPolicy`` (pure state machine)
``shardmap``              ``ShardMap.shard_for``, ``ShardMapWatcher`` (``runtime.shard_map``)
``metrics``               ``counter``/``gauge``/``histogram`` for domain metrics
``health``                ``ReadinessCheck`` for extra dependencies of ``/ready``
``middleware``            ``CachedRoute`` (a GET answered from the near cache, below
                          FastAPI); request id, access log and metrics in one pass
``logging``/``tracing``   wired by ``create_service_app``; ``current_request_id``
========================  ==================================================================
"""
