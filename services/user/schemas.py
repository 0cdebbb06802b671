"""Request and response models of the user service.

Everything a client sends is checked here, before any I/O, so a bad value is a 422 naming
the field rather than a database error: emails are normalised (trimmed, lower-cased, the
domain in its IDNA form) so one mailbox is one account; text fields refuse control
characters (PostgreSQL cannot store NUL, and nobody's street has a tab in it) and card
numbers (a name or address line is never the place for one); passwords
follow :func:`password_problems`. Models that take input forbid unknown keys, so a typo
(``"is_defualt"``) is an error instead of a silently ignored field.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from services.core.pci import REFUSE_CARD_NUMBERS

Role = Literal["customer", "admin"]

# -- field types ------------------------------------------------------------------------------

_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalise_email(value: str) -> str:
    """The one spelling of an address we store and look up: trimmed and lower-cased, with an
    internationalised domain in its ASCII (IDNA) form. Raises ValueError when it is not an
    address a mail server would accept."""
    text = value.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("an email address looks like name@example.com")
    try:
        domain = domain.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("the email domain is not a valid host name") from exc
    if len(local) > 64 or not _LOCAL_PART.match(local):
        raise ValueError("the part before '@' contains characters an address cannot have")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels) \
            or labels[-1].isdigit():
        raise ValueError("the email domain is not a valid host name")
    address = f"{local}@{domain}"
    if len(address) > 254:
        raise ValueError("an email address has at most 254 characters")
    return address


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


# Stripped, 1..N characters, no control characters, no card number (these are names and
# address lines: refused so the shopper corrects it, see services.core.pci). Spelt out per
# length rather than made by a function, so the type checker sees each as a type.
Text50 = Annotated[str, BeforeValidator(_strip), StringConstraints(min_length=1, max_length=50),
                   AfterValidator(_no_control_characters), REFUSE_CARD_NUMBERS]
Text100 = Annotated[str, BeforeValidator(_strip),
                    StringConstraints(min_length=1, max_length=100),
                    AfterValidator(_no_control_characters), REFUSE_CARD_NUMBERS]
Text200 = Annotated[str, BeforeValidator(_strip),
                    StringConstraints(min_length=1, max_length=200),
                    AfterValidator(_no_control_characters), REFUSE_CARD_NUMBERS]


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(normalise_email),
                  Field(examples=["ada@example.com"])]


def _normalise_phone(value: str) -> str:
    compact = re.sub(r"[\s().-]", "", value)
    if not re.fullmatch(r"\+[1-9][0-9]{6,14}", compact):
        raise ValueError("use the international format, e.g. +441632960961")
    return compact


Phone = Annotated[str, StringConstraints(max_length=32), AfterValidator(_normalise_phone),
                  Field(examples=["+441632960961"])]

CountryCode = Annotated[str, BeforeValidator(_strip),
                        StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True),
                        Field(description="ISO 3166-1 alpha-2 country code.", examples=["GB"])]

PostalCode = Annotated[
    str, BeforeValidator(_strip),
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9 -]{0,18}[A-Za-z0-9])?$",
                      to_upper=True),
    REFUSE_CARD_NUMBERS,  # 20 characters hold one
    Field(examples=["SW1A 1AA"]),
]

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True),
                     Field(description="ISO 4217 currency code.", examples=["EUR"])]


def _normalise_language(value: str) -> str:
    parts = value.split("-")
    parts[0] = parts[0].lower()
    for i, part in enumerate(parts[1:], start=1):
        parts[i] = part.title() if len(part) == 4 else part.upper()
    return "-".join(parts)


Language = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"),
    AfterValidator(_normalise_language),
    Field(description="BCP 47 language tag: language, optional script and region.",
          examples=["en-GB"]),
]

# -- passwords --------------------------------------------------------------------------------

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128  # argon2 takes any length; a cap keeps one request's hashing cheap
_COMMON_PASSWORDS = frozenset({
    "password", "password1", "password12", "password123", "password1234", "passw0rd",
    "qwerty", "qwerty123", "qwertyuiop", "1234567890", "12345678910", "123456789a",
    "iloveyou", "letmein123", "welcome123", "admin12345", "changeme", "changeme123",
    "abc1234567", "abcdefghij1", "1q2w3e4r5t", "q1w2e3r4t5", "zaq12wsxcde",
})


def password_problems(password: str, email: str | None = None) -> list[str]:
    """What is wrong with a new password, in words a user can act on (empty: nothing).

    Length matters most (NIST SP 800-63B); beyond it we ask for one non-letter, refuse
    well-known passwords and the user's own address.
    """
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(f"use at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(f"use at most {PASSWORD_MAX_LENGTH} characters")
    if not any(ch.isalpha() for ch in password) or all(ch.isalpha() for ch in password):
        problems.append("mix letters with digits or symbols")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        problems.append("do not use control characters")
    if password.lower() in _COMMON_PASSWORDS:
        problems.append("this password is too common")
    if email:
        local = email.partition("@")[0]
        if len(local) >= 4 and local in password.lower():
            problems.append("do not use your email address in the password")
    return problems


def _policy(password: str) -> str:
    problems = password_problems(password)
    if problems:
        raise ValueError("; ".join(problems))
    return password


NewPassword = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    AfterValidator(_policy),
    Field(description=f"{PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters mixing "
          "letters with digits or symbols; not a common password, not the email address."),
]
#: A password being checked rather than set: any past policy may have produced it.
GivenPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- auth ---------------------------------------------------------------------------------------


class RegisterRequest(Input):
    email: Email
    password: NewPassword
    full_name: Text200 | None = None

    @model_validator(mode="after")
    def _password_not_the_email(self) -> Self:
        problems = password_problems(self.password, self.email)
        if problems:
            raise ValueError("password: " + "; ".join(problems))
        return self


class LoginRequest(Input):
    email: Email
    password: GivenPassword


class RefreshRequest(Input):
    refresh_token: Token


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_expires_in: int = Field(description="Seconds the refresh token is valid.")


class PasswordChange(Input):
    current_password: GivenPassword
    new_password: NewPassword

    @model_validator(mode="after")
    def _a_new_password(self) -> Self:
        if self.current_password == self.new_password:
            raise ValueError("the new password must differ from the current one")
        return self


# -- profile and preferences --------------------------------------------------------------------


class Preferences(BaseModel):
    """A shopper's settings; stored as JSON, always read back through this model so stored
    documents from older versions get today's defaults."""

    model_config = ConfigDict(extra="forbid")

    currency: Currency = "USD"
    language: Language = "en"
    marketing_opt_in: bool = Field(
        False, description="Consent to marketing messages; off until the user opts in.")

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> Preferences:
        known = {k: v for k, v in (stored or {}).items() if k in cls.model_fields}
        return cls.model_validate(known)


class PreferencesUpdate(Input):
    currency: Currency | None = None
    language: Language | None = None
    marketing_opt_in: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        _refuse_nulls(self, self.model_fields_set)
        return self


class ProfileUpdate(Input):
    """Fields left out stay as they are; ``null`` clears an optional field."""

    full_name: Text200 | None = None
    phone: Phone | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    full_name: str | None
    phone: str | None
    roles: list[Role]
    preferences: Preferences
    created_at: datetime
    updated_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class RoleGrant(Input):
    role: Role


# -- address book --------------------------------------------------------------------------------


class AddressFields(Input):
    label: Text50 | None = Field(None, examples=["Home"])
    recipient_name: Text200
    line1: Text200
    line2: Text200 | None = None
    city: Text100
    region: Text100 | None = None
    postal_code: PostalCode
    country: CountryCode
    phone: Phone | None = None


class AddressCreate(AddressFields):
    is_default: bool = Field(
        False, description="Make this the default address (the first address always is).")


_REQUIRED_ADDRESS_FIELDS = ("recipient_name", "line1", "city", "postal_code", "country",
                            "is_default")


class AddressUpdate(Input):
    """Fields left out stay as they are; ``null`` clears an optional field."""

    label: Text50 | None = None
    recipient_name: Text200 | None = None
    line1: Text200 | None = None
    line2: Text200 | None = None
    city: Text100 | None = None
    region: Text100 | None = None
    postal_code: PostalCode | None = None
    country: CountryCode | None = None
    phone: Phone | None = None
    is_default: bool | None = Field(
        None, description="true makes this the default; the default cannot be unset "
        "directly (make another address the default instead).")

    @model_validator(mode="after")
    def _no_nulls_for_required(self) -> Self:
        _refuse_nulls(self, self.model_fields_set & set(_REQUIRED_ADDRESS_FIELDS))
        return self


class AddressOut(BaseModel):
    id: uuid.UUID
    label: str | None
    recipient_name: str
    line1: str
    line2: str | None
    city: str
    region: str | None
    postal_code: str
    country: str
    phone: str | None
    is_default: bool
    created_at: datetime
    updated_at: datetime


def _refuse_nulls(model: BaseModel, fields: set[str]) -> None:
    nulls = sorted(name for name in fields if getattr(model, name) is None)
    if nulls:
        raise ValueError(f"{', '.join(nulls)} cannot be null; leave the field out to keep it")
