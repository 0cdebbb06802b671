"""The shared service core: one copy of everything every Kommerce service needs.

A service is ``app.py`` (``create_app()`` → :func:`services.core.app.create_service_app`)
→ ``api.py`` (routers) → ``service.py`` → ``repository.py`` → ``models.py``, plus a
``migrations/`` folder of revision files only. Import from the modules themselves; this
package re-exports nothing, so importing one piece never drags in the others.

========================  ==================================================================
module                    what a service author uses
========================  ==================================================================
``settings``              ``ServiceSettings`` (subclass it; env prefix ``KOMMERCE_``)
``app``                   ``create_service_app``, ``Consume``, ``ServiceRuntime``,
                          dependencies ``Runtime``, ``CacheDep``
``db``                    ``new_metadata`` (per-service ``Base``), ``Database``,
                          ``create_engine``, ``SessionDep``
``migrations``            ``Migrations(branch, versions_dir, metadata)``, ``upgrade``;
                          ``python -m services.core.migrations upgrade|revision|current``
``cache``                 ``Cache.get_or_load`` / ``get_or_load_json`` / ``invalidate`` /
                          ``invalidate_prefix``; ``scoped(name, near=True)`` keeps
                          in-process copies (``NearCache``)
``events.envelope``       ``EventEnvelope.new(type, source=, key=, payload=)``
``events.outbox``         ``add_event(session, envelope)`` (the one way to publish)
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
