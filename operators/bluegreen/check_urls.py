"""Where a pre-promotion check may send its GET: a Service of the rollout's own namespace, or
an address the operator's allowlist names.

Whoever may write a BlueGreenRollout sets its checks' ``url``, and the operator requests it
from where it runs and writes the outcome into the rollout's status. Unrestricted, that lets
anyone allowed to create a rollout make the operator probe any address it can reach (a cloud
metadata endpoint, the API server, a port on its own loopback) and read the answer back. So a
``url`` must name a Service that exists in the rollout's namespace and serves the port, or be
covered by ``KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST``; anything else is refused before a single
byte is sent. ExternalName Services are refused too: they alias an arbitrary DNS name.

The URL actually requested is rebuilt from the parsed parts (scheme, host, port, path), never
passed on as typed, so a URL that two parsers would read differently cannot slip a second
host past the check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ALLOWLIST_ENV = "KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST"
REFUSED_REASON = "CheckUrlRefused"
CLUSTER_DOMAIN = "cluster.local"
DEFAULT_PORTS = {"http": 80, "https": 443}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOST_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

#: Service name -> the Service in the rollout's namespace (as the API server returns it), or
#: None when there is none.
ServiceLookup = Callable[[str], Mapping[str, Any] | None]


class RefusedCheckUrl(ValueError):
    """A check URL the operator will not request; the message says why and what is allowed."""


@dataclass(frozen=True)
class Target:
    """A check URL taken apart: what is compared with the allowlist and then requested."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int
    path: str  # path and query, always starting with "/"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_target(url: str) -> Target:
    """Split ``url``; refuses credentials, a host that is neither a DNS name nor an IP address,
    and a port out of range."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RefusedCheckUrl("only http and https URLs are requested")
    if "@" in parts.netloc:
        raise RefusedCheckUrl("a check URL may not carry credentials (user@host)")
    host = (parts.hostname or "").rstrip(".")
    if not host or not (_HOST_NAME.match(host) or _is_ip(host)):
        raise RefusedCheckUrl("its host is not a DNS name or an IP address")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as error:
        raise RefusedCheckUrl("its port is not a number from 1 to 65535") from error
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, host, port, path)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AllowedPrefix:
    """One allowlist entry: ``scheme://host[:port][/path]`` (that scheme, host and port, and
    paths under that path) or ``host:port`` (either scheme, any path)."""

    host: str
    port: int
    scheme: str | None = None
    path: str = ""

    def covers(self, target: Target) -> bool:
        if (self.scheme not in (None, target.scheme) or self.host != target.host
                or self.port != target.port):
            return False
        prefix = self.path.rstrip("/")
        return not prefix or target.path == prefix or target.path.startswith(
            (prefix + "/", prefix + "?"))


def parse_allowlist(text: str) -> tuple[AllowedPrefix, ...]:
    """The entries of ``KOMMERCE_OPERATOR_CHECK_URL_ALLOWLIST`` (separated by commas or
    white space); a malformed one is a ValueError naming it, so the operator refuses to start
    rather than guess what was meant."""
    entries = []
    for entry in filter(None, re.split(r"[,\s]+", text)):
        try:
            if "://" in entry:
                target = parse_target(entry)
                path = urlsplit(entry).path
                entries.append(AllowedPrefix(target.host, target.port, target.scheme, path))
            else:
                target = parse_target(f"http://{entry}")
                if urlsplit(f"http://{entry}").port is None or target.path != "/":
                    raise RefusedCheckUrl("no port")
                entries.append(AllowedPrefix(target.host, target.port))
        except RefusedCheckUrl as error:
            raise ValueError(f"{ALLOWLIST_ENV}: {entry!r} is neither a URL prefix "
                             f"(http://host:port/path) nor host:port ({error})") from None
    return tuple(entries)


def _no_services(_: str) -> Mapping[str, Any] | None:
    return None


@dataclass(frozen=True)
class CheckUrlPolicy:
    """What one rollout's checks may request: Services of ``namespace`` (looked up with
    ``lookup``) and whatever ``allowlist`` covers."""

    namespace: str
    allowlist: tuple[AllowedPrefix, ...] = ()
    lookup: ServiceLookup = field(default=_no_services)

    def resolve(self, url: str) -> str:
        """The URL to request for a check's ``url``, or RefusedCheckUrl saying why not."""
        try:
            target = parse_target(url)
            if any(entry.covers(target) for entry in self.allowlist):
                return target.url
            return self._service_url(target)
        except RefusedCheckUrl as refused:
            raise RefusedCheckUrl(
                f"check URL {url} refused: {refused}; no request was sent. A check may ask a "
                f"Service of namespace {self.namespace} (http://<service>[:port]/path or "
                f"http://<service>.{self.namespace}.svc[.{CLUSTER_DOMAIN}][:port]/path), or "
                f"an address in the operator's {ALLOWLIST_ENV}") from None

    def _service_url(self, target: Target) -> str:
        service, namespace = _service_of(target.host, self.namespace)
        if namespace != self.namespace:
            raise RefusedCheckUrl(f"it names namespace {namespace}, not the rollout's own")
        found = self.lookup(service)
        if found is None:
            raise RefusedCheckUrl(f"there is no Service {service} in namespace {namespace}")
        spec = found.get("spec") or {}
        if spec.get("type") == "ExternalName":
            raise RefusedCheckUrl(f"Service {service} is of type ExternalName, an alias for "
                                  "another host")
        ports = sorted({int(port["port"]) for port in spec.get("ports") or []})
        if target.port not in ports:
            served = ", ".join(map(str, ports)) or "none"
            raise RefusedCheckUrl(f"Service {service} does not serve port {target.port} "
                                  f"(its ports: {served})")
        host = f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}"
        return Target(target.scheme, host, target.port, target.path).url


def _service_of(host: str, namespace: str) -> tuple[str, str]:
    """(Service, namespace) named by ``host``: ``svc`` (the rollout's namespace),
    ``svc.ns.svc`` or ``svc.ns.svc.cluster.local``."""
    labels = host.split(".")
    if len(labels) == 1:
        service = labels[0]
    elif len(labels) in (3, 5) and labels[2] == "svc" and \
            (len(labels) == 3 or ".".join(labels[3:]) == CLUSTER_DOMAIN):
        service, namespace = labels[0], labels[1]
    else:
        raise RefusedCheckUrl("its host is not a Service of the rollout's namespace")
    if not _DNS_LABEL.match(service) or not _DNS_LABEL.match(namespace):
        raise RefusedCheckUrl("its host is not a Service of the rollout's namespace")
    return service, namespace
