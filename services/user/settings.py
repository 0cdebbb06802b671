"""The user service's settings: the core's, plus login limits and the bootstrap admin."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from services.core.settings import ServiceSettings


class UserSettings(ServiceSettings):
    """Read from ``KOMMERCE_*`` like every service's settings, so one Secret feeds them all."""

    service_name: str = Field(
        "user", pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Name of this service: event source, topic 'user.events', schema 'user'.")

    login_max_failures_per_email: int = Field(
        5, ge=1,
        description="Failed logins (or password checks) allowed for one email within the "
        "window before further attempts get 429; the window starts at the first failure.")
    login_max_failures_per_ip: int = Field(
        50, ge=1,
        description="Failed logins allowed from one client address within the window; "
        "higher than the per-email limit because shops sit behind shared NATs.")
    login_failure_window_seconds: int = Field(
        15 * 60, ge=1,
        description="How long failures are remembered, i.e. the longest lockout.")
    refresh_family_max_age_seconds: int = Field(
        30 * 24 * 3600, ge=1,
        description="Longest a login session can be kept alive by rotating refresh tokens; "
        "after it the user logs in again.")
    max_addresses_per_user: int = Field(
        20, ge=1, description="Size limit of one address book.")

    bootstrap_admin_email: str | None = Field(
        None,
        description="At start-up, make sure this account exists with the admin role (created "
        "with bootstrap_admin_password when absent; an existing account is promoted only if "
        "that password matches, so nobody can squat the address). Unset: no seeding.")
    bootstrap_admin_password: SecretStr | None = Field(
        None, description="Password for bootstrap_admin_email.")

    @model_validator(mode="after")
    def _bootstrap_needs_both(self) -> UserSettings:
        if (self.bootstrap_admin_email is None) != (self.bootstrap_admin_password is None):
            raise ValueError("set both bootstrap_admin_email and bootstrap_admin_password")
        return self
