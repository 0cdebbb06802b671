"""Settings: every value has a documented default; the environment overrides it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.core.settings import ServiceSettings


def test_every_setting_has_a_default_and_a_description() -> None:
    for name, field in ServiceSettings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert not field.is_required(), f"{name} has no default"


def test_defaults_match_the_reference() -> None:
    settings = ServiceSettings()

    assert settings.access_token_ttl_seconds == 15 * 60
    assert settings.refresh_token_ttl_seconds == 7 * 24 * 3600
    assert settings.event_bus == "redis"
    assert settings.otel_enabled is False


def test_environment_overrides_with_the_kommerce_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMMERCE_SERVICE_NAME", "product")
    monkeypatch.setenv("KOMMERCE_EVENT_BUS", "kafka")
    monkeypatch.setenv("KOMMERCE_CORS_ORIGINS", "https://shop.example, https://admin.example")

    settings = ServiceSettings()

    assert settings.service_name == "product"
    assert settings.event_bus == "kafka"
    assert settings.cors_origins == ["https://shop.example", "https://admin.example"]
    assert settings.schema_name == "product"
    assert settings.cache_key_prefix == "product:"


def test_cors_origins_accept_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMMERCE_CORS_ORIGINS", '["https://a.example"]')

    assert ServiceSettings().cors_origins == ["https://a.example"]


def test_schema_defaults_to_the_service_name_with_underscores() -> None:
    assert ServiceSettings(service_name="order-saga").schema_name == "order_saga"


def test_production_refuses_to_run_without_the_trusted_keys() -> None:
    with pytest.raises(ValidationError, match="JWT_JWKS must be set"):
        ServiceSettings(environment="production")


def test_production_accepts_a_jwks() -> None:
    settings = ServiceSettings(environment="production", jwt_jwks='{"keys": []}')

    assert settings.jwt_jwks == '{"keys": []}'


def test_the_old_shared_jwt_secret_is_refused_loudly() -> None:
    with pytest.raises(ValidationError, match="no longer used"):
        ServiceSettings(jwt_secret="x" * 48)


def test_an_unknown_bus_backend_is_refused() -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(event_bus="rabbitmq")  # type: ignore[arg-type]


def test_the_operators_connection_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db:5432/product")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("KOMMERCE_CIRCUIT_BREAKERS_DIR", "/etc/kommerce/circuit-breakers")

    settings = ServiceSettings()

    assert settings.database_url == "postgresql+asyncpg://u@db:5432/product"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert str(settings.breaker_config_path) == "/etc/kommerce/circuit-breakers"


def test_the_prefixed_variable_wins_over_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@db/a")
    monkeypatch.setenv("KOMMERCE_DATABASE_URL", "postgresql+asyncpg://u@db/b")

    assert ServiceSettings().database_url.endswith("/b")
    assert ServiceSettings(database_url="postgresql+asyncpg://x/c").database_url.endswith("/c")
