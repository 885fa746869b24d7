"""The Go system's settings keys, read with the meaning they have in nexus.

The Go scheduler, receiver and supervisor each read an ``appconfig.yaml`` (through
nexus-core's viper loader) whose keys mostly have the very names nexus uses. The rest are
listed in :data:`GO_KEYS`: each is either another name for a nexus setting (an
:class:`Alias`) or has no meaning in nexus (:class:`Ignored`, with the reason); a key in
neither place is checked against nexus's own settings, so a misspelled one is still
refused with its name. Environment names follow the same rule as nexus's own: the Go
loader's prefix ``NEXUS_``, its key delimiter ``__`` and its ``-`` to ``_`` replacement
give ``NEXUS__SECTION__KEY``, exactly nexus's convention.

The Go loader also reads ``appconfig.<APPLICATION_ENVIRONMENT>.yaml`` instead of
``appconfig.yaml`` when that file exists (:func:`settings_file`), and treats a key written
as an empty string (as the Go images' shipped files do for everything their charts fill
in) as its zero value: nexus reads it as unset, so its default applies (the settings
loader drops such values of known keys; an unknown key is refused whatever its value).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.errors import ConfigError

NO_QUEUE = (
    "the Go receiver and supervisor pass their work through a rate-limited queue; nexus's "
    "receiver writes each completion within its request and its supervisor reconciles every "
    "supervisor.reconcile-interval (the scheduler's launch queue is s3-buffer.buffer-config.*)"
)


@dataclass(frozen=True)
class Alias:
    """Another name for the nexus setting ``target``; ``convert`` maps a Go value onto
    nexus's, ``implies`` are further nexus settings that the Go key stands for."""

    target: str
    convert: Callable[[Any], Any] | None = None
    implies: tuple[tuple[str, Any], ...] = ()
    note: str = ""  # a start-up warning given when the key is set


@dataclass(frozen=True)
class Ignored:
    """Accepted with one start-up warning: the Go key has no meaning in nexus."""

    reason: str


@dataclass(frozen=True)
class AstraBundle:
    """The AstraDB secure connect bundle, base64-encoded: written to a file under
    ``data-dir`` that ``scylla-cql-store.secure-connect-bundle`` then names."""


def _comma_list(value: Any) -> Any:
    """An environment value is one string; the Go loader splits lists on commas."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _https_url(value: Any) -> Any:
    """The Go scheduler's ``external-hostname`` is a bare host name reached over HTTPS."""
    if isinstance(value, str) and value and "://" not in value:
        return f"https://{value}"
    return value


_ASTRA: dict[str, Alias | Ignored | AstraBundle] = {
    "secure-connection-bundle-base64": AstraBundle(),
    "gateway-user": Alias("scylla-cql-store.user"),
    "gateway-password": Alias("scylla-cql-store.password"),
    "indexes-supported": Alias("scylla-cql-store.indexes-supported"),
}

GO_KEYS: dict[str, Alias | Ignored | AstraBundle] = {
    # The scheduler's chart and shipped file (nexus-core <= 1.4) keep these two under
    # buffer-config; newer nexus-core and nexus keep them one level up.
    "s3-buffer.buffer-config.payload-storage-path": Alias("s3-buffer.payload-storage-path"),
    "s3-buffer.buffer-config.payload-valid-for": Alias("s3-buffer.payload-valid-for"),
    "s3-buffer.request-payload-proxy-configuration.tenant-id": Ignored(
        "nexus signs payload URLs with sign-secret alone; they carry no tenant"
    ),
    # AstraDB: astra-cql-store in current releases, cql-store in the first ones (and in
    # the Secret examples of the Go charts: NEXUS__CQL_STORE__GATEWAY_USER, ...).
    **{f"astra-cql-store.{key}": entry for key, entry in _ASTRA.items()},
    **{f"cql-store.{key}": entry for key, entry in _ASTRA.items()},
    # AWS Keyspaces (cql-store-type cassandra-keyspaces): TLS to the given hosts.
    "keyspaces-cql-store.hosts": Alias("scylla-cql-store.hosts", _comma_list),
    "keyspaces-cql-store.port": Alias("scylla-cql-store.port"),
    "keyspaces-cql-store.ca-path": Alias(
        "scylla-cql-store.tls-ca-path", implies=(("scylla-cql-store.tls", True),)
    ),
    "keyspaces-cql-store.region": Ignored(
        "nexus signs in with scylla-cql-store.user/password, not with AWS SigV4 "
        "(KEYSPACES_AWS_ACCESS_KEY_ID/SECRET_ACCESS_KEY are not read)"
    ),
    # The supervisor's (and the first scheduler's) namespace of the Jobs it runs.
    "resource-namespace": Alias("runtime-namespace"),
    "external-hostname": Alias("external-url", _https_url),
    # The Go configuration controller's keys (its appconfig.yaml, all at the top level).
    "alias": Alias("controller.alias"),
    "controller-config-path": Alias("kube-config-path"),
    "shard-config-path": Alias("shard-kube-config-path"),
    "controller-namespace": Alias("controller.namespace"),
    # The controller's work queue; the Go receiver and supervisor have these keys too.
    **{
        key: Alias(f"controller.{key}", note=f"only --role controller reads it; {NO_QUEUE}")
        for key in (
            "workers",
            "failure-rate-base-delay",
            "failure-rate-max-delay",
            "rate-limit-elements-per-second",
            "rate-limit-elements-burst",
        )
    },
}

# Sections only the Go apps have: once their known keys are taken out, anything left in
# one is a misspelling.
GO_SECTIONS = ("astra-cql-store", "cql-store", "keyspaces-cql-store")


@dataclass
class GoNotes:
    """What reading Go keys left to do once the settings are known."""

    ignored: dict[str, str] = field(default_factory=dict)  # Go key -> warning text
    bundle: tuple[str, str] | None = None  # (where it came from, base64 text)

    def update(self, other: GoNotes) -> None:
        for key, text in other.ignored.items():
            self.ignored.setdefault(key, text)
        self.bundle = other.bundle or self.bundle

    def warnings(self) -> list[str]:
        return list(self.ignored.values())


def is_go_key(path: list[str]) -> bool:
    return ".".join(path) in GO_KEYS


def _pop(tree: dict[str, Any], path: list[str]) -> tuple[bool, Any]:
    node: Any = tree
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False, None
    if path[-1] not in node:
        return False, None
    return True, node.pop(path[-1])


def _unset(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _get(tree: dict[str, Any], path: list[str]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def put(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def translate(tree: dict[str, Any], source: Callable[[str], str]) -> tuple[dict[str, Any], GoNotes]:
    """``tree`` (one source: the file, or the environment) with its Go keys moved onto
    nexus's. Where a Go key and the nexus key it stands for are both set in one source,
    the nexus key wins. ``source(key)`` says where a key was written, for messages."""
    notes = GoNotes()
    for key, entry in GO_KEYS.items():
        found, value = _pop(tree, key.split("."))
        if not found:
            continue
        where = source(key)
        if isinstance(entry, Ignored):
            notes.ignored[key] = (
                f"Setting {where} has no meaning in nexus and is ignored: {entry.reason}"
            )
        elif isinstance(entry, AstraBundle):
            if not _unset(value):
                notes.bundle = (where, str(value))
        else:
            if entry.note:
                notes.ignored[key] = f"Setting {where} is read as {entry.target}: {entry.note}"
            if _unset(value):
                continue
            target = entry.target.split(".")
            if _unset(_get(tree, target)):
                put(tree, target, entry.convert(value) if entry.convert else value)
                for implied, implied_value in entry.implies:
                    put(tree, implied.split("."), implied_value)
    for section in GO_SECTIONS:
        rest = tree.pop(section, None)
        if isinstance(rest, dict) and rest:
            wrong = f"{section}.{sorted(rest)[0]}"
            raise ConfigError(f"Unknown setting {source(wrong)}: no key '{wrong}'")
        if not _unset(rest) and not isinstance(rest, dict):
            raise ConfigError(f"Setting {source(section)} must be a section")
    return tree, notes


def normalise(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with values written as the Go apps write them made nexus's: ``log-level``
    in upper case (Go's levels ignore case), and ``host:port`` contact points (which
    gocql takes) split into ``scylla-cql-store.hosts`` and ``.port``."""
    if isinstance(tree.get("log-level"), str):
        tree = {**tree, "log-level": tree["log-level"].upper()}
    cql = tree.get("scylla-cql-store")
    if isinstance(cql, dict) and isinstance(cql.get("hosts"), list):
        tree = {**tree, "scylla-cql-store": _split_ports(cql)}
    return tree


def _split_ports(cql: dict[str, Any]) -> dict[str, Any]:
    hosts, ports = [], set()
    for host in cql["hosts"]:
        name, colon, port = str(host).rpartition(":")
        if colon and port.isdigit() and name and (":" not in name or name.endswith("]")):
            hosts.append(name.strip("[]"))
            ports.add(int(port))
        else:
            hosts.append(host)
    if not ports:
        return cql
    given = cql.get("port")
    if len(ports) > 1 or (given is not None and str(given) != str(next(iter(ports)))):
        raise ConfigError(
            f"Invalid settings: scylla-cql-store.hosts {cql['hosts']} name another port than "
            "scylla-cql-store.port, or several: nexus connects to every host on one port"
        )
    return {**cql, "hosts": hosts, "port": ports.pop()}


def settings_file(path: str | os.PathLike[str], environ: Mapping[str, str]) -> Path:
    """The file to read: ``appconfig.<env>.yaml`` next to ``path`` when
    ``APPLICATION_ENVIRONMENT=<env>`` is set and that file exists (it replaces ``path``, as
    in the Go loader, rather than being merged over it), otherwise ``path``."""
    given = Path(path)
    env = environ.get("APPLICATION_ENVIRONMENT", "").strip().lower()
    if env:
        candidate = given.parent / f"appconfig.{env}.yaml"
        if candidate.is_file():
            return candidate
    return given


def write_bundle(where: str, text: str, data_dir: Path) -> str:
    """Decode the base64 bundle into ``data-dir`` (named by its digest, so processes
    sharing the folder agree) and return the file's path."""
    try:
        content = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"Invalid settings: {where} is not base64: {exc}") from exc
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise ConfigError(
            f"Invalid settings: {where} is not an AstraDB secure connect bundle (a zip file)"
        )
    folder = data_dir / "astra"
    target = folder / f"secure-connect-{hashlib.sha256(content).hexdigest()[:16]}.zip"
    if not target.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.part")
            partial.write_bytes(content)
            partial.chmod(0o600)
            partial.replace(target)
        except OSError as exc:
            raise ConfigError(
                f"Invalid settings: cannot write the bundle of {where} to {folder}: {exc}"
            ) from exc
    return str(target)
