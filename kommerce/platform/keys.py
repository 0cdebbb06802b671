"""The token keys of one data folder: made once, kept in ``secrets/``, handed out sparingly.

The user service gets the private key of user tokens; every other service gets a key of its
own that signs only its service identity (:mod:`services.core.signing`); all of them, the
gateway included, get ``secrets/jwks.json``, the public halves, to verify with. So no
process but the user service can mint a user's token, and no two installs share a key.

Both variables are always set for each process, overriding any in the caller's shell: one
private key inherited by every process would hand the user key to all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from services.core.signing import USER_KEY_ID, generate_private_key_pem, jwks_document, service_kid

PRIVATE_KEY_VARIABLE = "KOMMERCE_JWT_PRIVATE_KEY"
JWKS_VARIABLE = "KOMMERCE_JWT_JWKS"
USER_SERVICE = "user"


def _secrets(data_dir: Path) -> Path:
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _key_file(data_dir: Path, service: str) -> Path:
    return _secrets(data_dir) / f"jwt-{service}.pem"


def key_id(service: str) -> str:
    return USER_KEY_ID if service == USER_SERVICE else service_kid(service)


def private_key(data_dir: Path, service: str) -> str:
    """Service ``service``'s private key PEM, generated on first use."""
    path = _key_file(data_dir, service)
    if path.exists():
        return path.read_text()
    pem = generate_private_key_pem()
    path.write_text(pem)
    path.chmod(0o600)
    return pem


def write_jwks(data_dir: Path, services: Iterable[str]) -> Path:
    """``secrets/jwks.json``: the public keys of ``services`` (their private keys made as
    needed); rewritten on every start so it lists exactly the services that run."""
    document = jwks_document({key_id(name): private_key(data_dir, name)
                              for name in sorted(set(services))})
    path = _secrets(data_dir) / "jwks.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def shared_env(data_dir: Path, services: Iterable[str]) -> dict[str, str]:
    """What every process gets: where the trusted public keys are."""
    return {JWKS_VARIABLE: str(write_jwks(data_dir, services))}


def service_env(data_dir: Path, service: str) -> dict[str, str]:
    """What ``service`` alone gets: its own private key (the gateway none: it only
    verifies)."""
    return {PRIVATE_KEY_VARIABLE: private_key(data_dir, service)}
