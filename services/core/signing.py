"""The keys tokens are signed and verified with: one private key per issuer, public keys as JWKS.

Two kinds of issuer share one trusted key set, told apart by the key id (``kid``):

* the **user key** (any kid not starting with ``service:``): the user service alone holds
  it and signs the users' access and refresh tokens with it;
* a **service key** (kid ``service:<name>``): each calling service has its own and signs
  only its own identity tokens with it — subject ``service:<name>``, role ``service``, the
  called service as audience. Verifiers enforce that (:mod:`services.core.auth`), so a
  compromised service can act as itself but never mint a user's or an admin's token.

Signatures are Ed25519 (EdDSA); EC P-256 keys (ES256) are accepted too. Outside
production, a platform started without keys uses :data:`DEVELOPMENT_KEY_PEM`, trusted for
everything like the shared development secret it replaces; production refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

#: The development key: known to everyone who reads this file, hence refused in production.
DEVELOPMENT_KEY_ID = "development"
DEVELOPMENT_KEY_PEM = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEII4UDUYrpYvJjl8q9ACexSsSPqo0apQ4HGnVu5BXl6jr
-----END PRIVATE KEY-----
"""

SERVICE_KID_PREFIX = "service:"
USER_KEY_ID = "user"

KeyKind = Literal["user", "service", "development"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def key_kind(kid: str) -> KeyKind:
    if kid == DEVELOPMENT_KEY_ID:
        return "development"
    return "service" if kid.startswith(SERVICE_KID_PREFIX) else "user"


def service_kid(name: str) -> str:
    """The key id of service ``name``'s own key."""
    return f"{SERVICE_KID_PREFIX}{name}"


def kid_service(kid: str) -> str:
    """The service a service key belongs to (``service:order:2`` → ``order``)."""
    return kid.removeprefix(SERVICE_KID_PREFIX).split(":", 1)[0]


def generate_private_key_pem() -> str:
    """A new Ed25519 private key, PEM (PKCS#8)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_private_key(pem: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the JWT private key is not an unencrypted PEM private key") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("the JWT private key must be Ed25519 or EC P-256")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) \
        else "ES256"


def public_jwk(key: PrivateKey | PublicKey, kid: str) -> dict[str, Any]:
    """The public half of ``key`` as a JWK with its ``kid``, ``alg`` and ``use``."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey
                                            | ec.EllipticCurvePrivateKey) else key
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": algorithm_of(public), "use": "sig"}


def jwks_document(keys: dict[str, str]) -> dict[str, Any]:
    """A JWKS of the public halves of ``{kid: private key PEM}``."""
    return {"keys": [public_jwk(load_private_key(pem), kid) for kid, pem in keys.items()]}


@dataclass(frozen=True)
class TrustedKey:
    """One verification key and what tokens it may sign."""

    kid: str
    key: Any  # the cryptography public key pyjwt verifies with
    algorithm: str

    @property
    def kind(self) -> KeyKind:
        return key_kind(self.kid)


def parse_jwks(source: str) -> dict[str, TrustedKey]:
    """The keys of a JWKS given as JSON text or as the path of a file holding it."""
    text = source.strip()
    if not text.startswith("{"):
        path = Path(text)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"the JWKS file {path} cannot be read: {exc}") from exc
    try:
        document = json.loads(text)
        keys = document["keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("the JWKS must be a JSON object with a 'keys' list") from exc
    trusted: dict[str, TrustedKey] = {}
    for entry in keys:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not kid:
            raise ValueError("every key of the JWKS needs a 'kid'")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ValueError(f"JWKS key {kid!r} is not usable: {exc}") from exc
        if jwk.algorithm_name not in ("EdDSA", "ES256"):
            raise ValueError(f"JWKS key {kid!r} uses {jwk.algorithm_name}; only EdDSA and "
                             "ES256 are accepted")
        trusted[kid] = TrustedKey(kid=kid, key=jwk.key, algorithm=jwk.algorithm_name)
    return trusted


def trusted_key_of(key: PrivateKey, kid: str) -> TrustedKey:
    return TrustedKey(kid=kid, key=key.public_key(), algorithm=algorithm_of(key))
