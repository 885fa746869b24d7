"""Settings: one YAML file plus ``NEXUS__SECTION__KEY`` environment overrides.

Keys follow the Go system's names where it has them (``cql-store-type``,
``scylla-cql-store.hosts``, ``s3-buffer.payload-storage-path``, ...). Every value is
validated at start-up; a bad key or value raises :class:`~nexus.errors.ConfigError`
naming it, and the process stops before it serves anything.

The Go apps' own keys and environment names that nexus spells differently, or that have
no meaning here, are read by :mod:`nexus.settings_go`.

Embedded defaults: with nothing configured, nexus keeps runs in a SQLite file and
payloads in a local folder under ``data-dir``, reads templates from ``templates-path`` and
runs algorithms as local processes.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from nexus import settings_go
from nexus.core.units import parse_duration, parse_quantity
from nexus.errors import ConfigError


class Duration(float):
    """Seconds, written in settings as a Go-style duration ("100ms", "24h")."""


class ByteSize(int):
    """Bytes, written in settings as a Kubernetes quantity ("500Mi")."""


class _Section(msgspec.Struct, rename="kebab", forbid_unknown_fields=True, kw_only=True):
    pass


class Tenants(_Section):
    """Fair share of each shard's lane between tenants (see ``nexus.core.tenancy``).

    ``queued-run-limit``: the runs any one tenant may have queued over all shards, 0 for
    no limit but the lanes'; beyond it its creates get a 429 naming it. ``limits`` and
    ``weights`` set it, and the tenant's weight in fair queueing (default 1), by tenant.
    In the environment a map is written ``team-a=3,team-b=1``.
    """

    queued_run_limit: int = 0
    limits: dict[str, int] = msgspec.field(default_factory=dict)
    weights: dict[str, int] = msgspec.field(default_factory=dict)
    # Whose share a run is in: its template's tenant, or (auth.mode kubernetes or oidc)
    # the caller that created it
    tenant_by: Literal["template", "caller"] = "template"


class BufferConfig(_Section):
    """The virtual queue and the launch rate towards each shard (SPEC §6)."""

    failure_rate_base_delay: Duration = Duration(0.1)
    failure_rate_max_delay: Duration = Duration(5.0)
    rate_limit_elements_per_second: float = 20.0
    rate_limit_elements_burst: int = 50
    workers: int = 8
    max_attempts: int = 8
    queue_capacity: int = 100_000
    tenants: Tenants = msgspec.field(default_factory=Tenants)


class PayloadProxy(_Section):
    """Signed payload URLs served by the scheduler itself (embedded payload folder)."""

    sign_secret: str = ""
    serve_path_template: str = "/data/v1/payloads/{algorithm}/requests/{request_id}"


class S3Buffer(_Section):
    payload_storage_path: str = ""
    payload_valid_for: Duration = Duration(86400.0)
    access_key_id: str = ""
    secret_access_key: str = ""
    region: str = "us-east-1"
    endpoint: str = ""
    virtual_hosted_style: bool = False
    multipart_threshold: ByteSize = ByteSize(8 * 1024 * 1024)
    # S3 client limits: a store that is down must turn into a quick 503, not a hung request.
    connect_timeout: Duration = Duration(2.0)  # TCP/TLS connect, per attempt
    request_timeout: Duration = Duration(60.0)  # one HTTP request (a part, for multipart)
    max_retries: int = 3  # retries of a failed request, with exponential backoff
    retry_timeout: Duration = Duration(10.0)  # no retry starts later than this after the first try
    buffer_config: BufferConfig = msgspec.field(default_factory=BufferConfig)
    request_payload_proxy_configuration: PayloadProxy = msgspec.field(default_factory=PayloadProxy)


class ScyllaCqlStore(_Section):
    hosts: list[str] = msgspec.field(default_factory=list)
    port: int = 9042
    user: str = ""
    password: str = ""
    local_dc: str = ""
    keyspace: str = "nexus"
    replication_factor: int = 1
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    tls: bool = False
    tls_ca_path: str = ""
    connect_timeout: Duration = Duration(5.0)
    request_timeout: Duration = Duration(5.0)
    checkpoint_ttl: Duration = Duration(0.0)
    submission_ttl: Duration = Duration(0.0)
    create_schema: bool = True  # create the keyspace (if missing) and the tables at start-up
    secure_connect_bundle: str = ""  # AstraDB: the bundle zip; replaces hosts, port and TLS
    reconnect_max_delay: Duration = Duration(10.0)  # longest wait between reconnection attempts
    indexes_supported: bool = False  # Go's indexed layout: tag/host lookups by secondary index


class SqliteStore(_Section):
    path: str = ""


class Kubernetes(_Section):
    client_qps: float = 20.0
    client_burst: int = 40
    job_ttl_seconds_after_finished: int = 300
    in_cluster_shard: str = ""


class Supervisor(_Section):
    job_success_grace: Duration = Duration(30.0)
    backoff_grace: Duration = Duration(60.0)
    lease_ttl: Duration = Duration(15.0)
    heartbeat_interval: Duration = Duration(5.0)
    reconcile_interval: Duration = Duration(10.0)
    # Relaunches of a run whose process was lost with a crashed nexus (a disruption, not
    # counted against maximumRetries) before it is FAILED; 0: fail it at once.
    disruption_limit: int = 3
    # The shards whose runs this supervisor looks after (nexus.core.scope); empty: all.
    shards: list[str] = msgspec.field(default_factory=list)


class Controller(_Section):
    """The configuration controller (``--role controller``, docs/controller.md): copies
    templates, workgroups and the Secrets/ConfigMaps they use to every shard."""

    alias: str = "nexus"  # the controller-app label value on every object it writes
    namespace: str = ""  # where templates live, here and in every shard; "": runtime-namespace
    workers: int = 2
    failure_rate_base_delay: Duration = Duration(0.5)  # first retry of a failed sync
    failure_rate_max_delay: Duration = Duration(60.0)  # longest wait between retries
    rate_limit_elements_per_second: float = 20.0  # syncs started, over all objects
    rate_limit_elements_burst: int = 50
    resync_interval: Duration = Duration(30.0)  # every object is checked again this often
    request_timeout: Duration = Duration(10.0)  # one API call to a shard or this cluster
    # Of several replicas, the holder of the Lease <alias>-configuration-controller syncs;
    # a standby takes over once the holder has not renewed it for this long.
    lease_duration: Duration = Duration(15.0)


VerbName = Literal["create", "get", "update", "delete"]
VERBS: tuple[VerbName, ...] = ("create", "get", "update", "delete")


class Oidc(_Section):
    """``auth.mode: oidc``: JWTs from one issuer, checked against its published keys."""

    issuer: str = ""
    audience: str = ""
    jwks_url: str = ""  # default: jwks_uri of <issuer>/.well-known/openid-configuration
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    user_claim: str = "sub"
    groups_claim: str = "groups"
    leeway: Duration = Duration(30.0)  # clock skew allowed on exp, nbf and iat
    fetch_timeout: Duration = Duration(5.0)  # one fetch of the discovery document or JWKS


class AccessRule(_Section):
    """``auth.mode: oidc``: callers in any of ``groups`` (``*``: every caller with a valid
    token) may use ``verbs`` on the algorithms named (or matched as shell-style globs) by
    ``algorithms``. Templates grant more by annotation (docs/auth.md)."""

    groups: list[str]
    algorithms: list[str]
    verbs: list[VerbName] = msgspec.field(default_factory=lambda: list(VERBS))


class Auth(_Section):
    """Who may call the scheduler's run API (docs/auth.md)."""

    mode: Literal["none", "kubernetes", "oidc"] = "none"
    cache_ttl: Duration = Duration(10.0)  # how long a token's or a decision's check is reused
    namespace: str = ""  # where SubjectAccessReviews name templates; "": runtime-namespace
    oidc: Oidc = msgspec.field(default_factory=Oidc)
    rules: list[AccessRule] = msgspec.field(default_factory=list)
    # The receiver accepts a report on a run only with that run's token (in its Job's env)
    receiver_tokens: bool = False
    # The HMAC key of run tokens; "": a random one kept in data-dir/.receiver-token-secret
    # (set it when the scheduler and the receiver are separate processes)
    receiver_token_secret: str = ""
    receiver_token_lifetime: Duration = Duration(86400.0)  # for a run without a deadline
    # Requests per second of the run API per authenticated caller (0: no limit), and the
    # burst it may send at once; beyond it 429 with Retry-After
    caller_rate: float = 0.0
    caller_burst: int = 20


class Webhooks(_Section):
    """Completion webhooks: a run's ``callbackUrl`` gets its result (docs/webhooks.md)."""

    # The HMAC key of X-Nexus-Signature; "": a random one kept in data-dir/.webhook-secret
    # (set it when several schedulers run, so receivers verify one key).
    secret: str = ""
    # CIDRs a callback may point into besides public addresses (loopback, private and
    # reserved ranges are refused otherwise), e.g. ["10.20.0.0/16"].
    allowed_networks: list[str] = msgspec.field(default_factory=list)
    timeout: Duration = Duration(10.0)  # one POST
    max_attempts: int = 12
    retry_base: Duration = Duration(2.0)  # wait after the first failure, doubled each time
    retry_max: Duration = Duration(600.0)
    sweep_interval: Duration = Duration(1.0)  # how often a scheduler looks for due ones


class Settings(_Section):
    instance_id: str = msgspec.field(default_factory=socket.gethostname)
    data_dir: str = "nexus-data"
    external_url: str = ""
    receiver_url: str = ""
    bind_host: str = "127.0.0.1"
    bind_port: int = 8080
    log_level: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "DISABLED"] = "INFO"
    log_format: Literal["json", "text"] = "json"  # json: one JSON object per line (nexus.logs)
    max_payload_size: ByteSize = ByteSize(500 * 1024 * 1024)
    max_wait: Duration = Duration(60.0)
    cql_store_type: Literal[
        "sqlite",
        "cassandra",
        "scylla",
        "cassandra-scylla",
        "astra",
        "cassandra-astra",
        "cassandra-keyspaces",
    ] = "sqlite"
    sqlite_store: SqliteStore = msgspec.field(default_factory=SqliteStore)
    scylla_cql_store: ScyllaCqlStore = msgspec.field(default_factory=ScyllaCqlStore)
    s3_buffer: S3Buffer = msgspec.field(default_factory=S3Buffer)
    executor: Literal["local", "kubernetes"] = "local"
    template_source: Literal["folder", "kubernetes"] = "folder"
    templates_path: str = "examples/templates"
    kube_config_path: str = ""
    shard_kube_config_path: str = ""
    runtime_namespace: str = "default"
    deploy_namespace: str = "default"
    kubernetes: Kubernetes = msgspec.field(default_factory=Kubernetes)
    supervisor: Supervisor = msgspec.field(default_factory=Supervisor)
    controller: Controller = msgspec.field(default_factory=Controller)
    auth: Auth = msgspec.field(default_factory=Auth)
    webhooks: Webhooks = msgspec.field(default_factory=Webhooks)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def public_url(self) -> str:
        """Base URL other processes use to reach this one (signed URLs, receiver).

        Bound to every address (0.0.0.0, ::), nexus is reached by its host name (in a Pod
        or a container, the name its network resolves to it): a URL naming 0.0.0.0 works
        nowhere else."""
        if self.external_url:
            return self.external_url.rstrip("/")
        host = self.bind_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.bind_port}"

    @property
    def receiver_base_url(self) -> str:
        return (self.receiver_url or self.public_url).rstrip("/")


ENV_PREFIX = "NEXUS__"


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        return Duration(parse_duration(obj))
    if type_ is ByteSize:
        return ByteSize(int(parse_quantity(obj)))
    raise NotImplementedError(f"unsupported settings type {type_!r}")


def _field_types(struct_type: type[msgspec.Struct]) -> dict[str, msgspec.inspect.Type]:
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)  # what a Struct class is described as
    return {field.encode_name: field.type for field in info.fields}


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], settings_go.GoNotes]:
    """Nest ``NEXUS__A_B__C_D=v`` as ``{"a-b": {"c-d": v}}``, checking each key exists;
    the Go apps' names are moved onto nexus's (:mod:`nexus.settings_go`)."""
    tree: dict[str, Any] = {}
    go_tree: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower().replace("_", "-") for part in name[len(ENV_PREFIX) :].split("__")]
        if settings_go.is_go_key(path):
            names[".".join(path)] = name
            settings_go.put(go_tree, path, value)
            continue
        if path[0] in settings_go.GO_SECTIONS:
            raise ConfigError(f"Unknown setting {name}: no key '{'.'.join(path)}'")
        struct_type: type[msgspec.Struct] = Settings
        node = tree
        for depth, key in enumerate(path):
            fields = _field_types(struct_type)
            kind = fields.get(key)
            if kind is None:
                raise ConfigError(f"Unknown setting {name}: no key '{'.'.join(path[: depth + 1])}'")
            if depth == len(path) - 1:
                if isinstance(kind, msgspec.inspect.StructType):
                    raise ConfigError(f"Setting {name} names a section, not a value")
                if isinstance(kind, msgspec.inspect.ListType):
                    node[key] = [item.strip() for item in value.split(",") if item.strip()]
                elif isinstance(kind, msgspec.inspect.DictType):
                    node[key] = _env_map(name, value)
                else:
                    node[key] = value
            else:
                if not isinstance(kind, msgspec.inspect.StructType):
                    raise ConfigError(f"Unknown setting {name}: '{key}' is not a section")
                struct_type = kind.cls
                node = node.setdefault(key, {})
    go_tree, notes = settings_go.translate(go_tree, lambda key: f"{key} ({names.get(key, key)})")
    return _merge(go_tree, tree), notes


def _env_map(name: str, value: str) -> dict[str, str]:
    """``a=1,b=2`` as ``{"a": "1", "b": "2"}``."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Setting {name}: write a map as key=value,key=value, got {item!r}")
        pairs[key.strip()] = val.strip()
    return pairs


def _drop_unset(tree: dict[str, Any], struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    """``tree`` without the empty-string and null values of known keys: the Go apps write
    "" for "not set" (their zero value), so nexus's default applies. An unknown key stays,
    whatever its value, for the conversion to refuse by name."""
    fields = _field_types(struct_type)
    kept: dict[str, Any] = {}
    for key, value in tree.items():
        kind = fields.get(key)
        if isinstance(value, dict) and isinstance(kind, msgspec.inspect.StructType):
            kept[key] = _drop_unset(value, kind.cls)
        elif kind is None or (value is not None and value != ""):
            kept[key] = value
    return kept


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read, merge and validate settings; raise ConfigError naming the bad key."""
    return load_settings_and_warnings(path, environ, **overrides)[0]


def load_settings_and_warnings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> tuple[Settings, list[str]]:
    """:func:`load_settings`, and the warnings to log once logging is set up: one per Go
    key that has no meaning in nexus.

    Precedence, lowest first: the file (``appconfig.<APPLICATION_ENVIRONMENT>.yaml`` next
    to ``path`` instead of ``path`` when it exists), the environment, ``overrides``."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    notes = settings_go.GoNotes()
    if path:
        path = settings_go.settings_file(path, environ)
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"Cannot read settings file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"Settings file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"Settings file {path} must hold a mapping at the top level")
        raw, notes = settings_go.translate(loaded, lambda key: f"{key} (in {path})")
    env_tree, env_notes = _env_overrides(environ)
    notes.update(env_notes)
    raw = settings_go.normalise(_drop_unset(_merge(raw, env_tree), Settings))
    raw = _merge(raw, {key.replace("_", "-"): value for key, value in overrides.items()})
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"Invalid settings: {exc}") from exc
    if notes.bundle and not settings.scylla_cql_store.secure_connect_bundle:
        bundle = settings_go.write_bundle(*notes.bundle, settings.data_path)
        cql = msgspec.structs.replace(settings.scylla_cql_store, secure_connect_bundle=bundle)
        settings = msgspec.structs.replace(settings, scylla_cql_store=cql)
    _check(settings)
    return settings, notes.warnings()


def _check(settings: Settings) -> None:
    limits = settings.s3_buffer.buffer_config
    for key, value, minimum in (
        ("s3-buffer.buffer-config.workers", limits.workers, 1),
        ("s3-buffer.buffer-config.max-attempts", limits.max_attempts, 1),
        ("s3-buffer.buffer-config.queue-capacity", limits.queue_capacity, 1),
        ("s3-buffer.buffer-config.rate-limit-elements-burst", limits.rate_limit_elements_burst, 1),
        ("bind-port", settings.bind_port, 0),
        ("max-payload-size", settings.max_payload_size, 1),
        ("supervisor.disruption-limit", settings.supervisor.disruption_limit, 0),
    ):
        if value < minimum:
            raise ConfigError(f"Invalid settings: {key} must be at least {minimum}, got {value}")
    if any(not name.strip() for name in settings.supervisor.shards):
        raise ConfigError("Invalid settings: supervisor.shards may not hold an empty name")
    tenants = limits.tenants
    for key, values, minimum, maximum in (
        ("queued-run-limit", {"": tenants.queued_run_limit}, 0, None),
        ("limits", tenants.limits, 0, None),
        ("weights", tenants.weights, 1, 1_000_000),
    ):
        for tenant, value in values.items():
            where = f"s3-buffer.buffer-config.tenants.{key}" + (f".{tenant}" if tenant else "")
            if value < minimum or (maximum is not None and value > maximum):
                bounds = f"at least {minimum}" + (f" and at most {maximum}" if maximum else "")
                raise ConfigError(f"Invalid settings: {where} must be {bounds}, got {value}")
    if limits.failure_rate_base_delay > limits.failure_rate_max_delay:
        raise ConfigError(
            "Invalid settings: s3-buffer.buffer-config.failure-rate-base-delay must not exceed "
            "failure-rate-max-delay"
        )
    _check_auth(settings.auth)
    if limits.tenants.tenant_by == "caller" and settings.auth.mode == "none":
        raise ConfigError(
            "Invalid settings: s3-buffer.buffer-config.tenants.tenant-by caller needs "
            "auth.mode kubernetes or oidc (mode none knows no caller)"
        )
    cql = settings.scylla_cql_store
    if settings.cql_store_type != "sqlite" and not (cql.hosts or cql.secure_connect_bundle):
        raise ConfigError(
            f"Invalid settings: cql-store-type '{settings.cql_store_type}' needs "
            "scylla-cql-store.hosts (e.g. NEXUS__SCYLLA_CQL_STORE__HOSTS=10.0.0.1,10.0.0.2), "
            "or scylla-cql-store.secure-connect-bundle for AstraDB"
        )


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")


def check_controller(controller: Controller) -> None:
    """Checked when ``--role controller`` starts, not at load: the Go receiver and
    supervisor have keys of the same names (read as ``controller.*``), and whatever they
    hold must not stop those roles from starting."""
    for key, count in (
        ("workers", controller.workers),
        ("rate-limit-elements-burst", controller.rate_limit_elements_burst),
    ):
        if count < 1:
            raise ConfigError(f"Invalid settings: controller.{key} must be at least 1, got {count}")
    for key, value in (
        ("rate-limit-elements-per-second", controller.rate_limit_elements_per_second),
        ("failure-rate-base-delay", controller.failure_rate_base_delay),
        ("resync-interval", controller.resync_interval),
        ("request-timeout", controller.request_timeout),
        ("lease-duration", controller.lease_duration),
    ):
        if not value > 0:
            raise ConfigError(
                f"Invalid settings: controller.{key} must be more than 0, got {value}"
            )
    if not _DNS_LABEL.fullmatch(controller.alias):
        raise ConfigError(
            f"Invalid settings: controller.alias {controller.alias[:80]!r} must be lower-case "
            "letters, digits and '-' (at most 40), starting and ending with a letter or digit: "
            "it is a label value and part of the leader Lease's name"
        )
    if controller.failure_rate_base_delay > controller.failure_rate_max_delay:
        raise ConfigError(
            "Invalid settings: controller.failure-rate-base-delay must not exceed "
            "failure-rate-max-delay"
        )


# Only public-key algorithms: "none" signs nothing, and HS* would need a shared secret
# that lets anyone who holds it mint tokens.
_ASYMMETRIC = {
    *(f"{family}{bits}" for family in ("RS", "PS", "ES") for bits in (256, 384, 512)),
    "ES256K",
    "EdDSA",
}


def _check_auth(auth: Auth) -> None:
    if auth.cache_ttl < 0:
        raise ConfigError("Invalid settings: auth.cache-ttl must not be negative")
    if not 0 <= auth.caller_rate <= 1e6 or not 1 <= auth.caller_burst <= 1_000_000:
        raise ConfigError(
            "Invalid settings: auth.caller-rate must be between 0 (no limit) and 1e6, "
            "auth.caller-burst between 1 and 1000000"
        )
    if auth.receiver_token_lifetime <= 0:
        raise ConfigError("Invalid settings: auth.receiver-token-lifetime must be positive")
    if auth.receiver_token_secret and len(auth.receiver_token_secret) < 16:
        raise ConfigError("Invalid settings: auth.receiver-token-secret needs 16 characters")
    if auth.mode != "oidc":
        return
    oidc = auth.oidc
    for key, value in (("issuer", oidc.issuer), ("audience", oidc.audience)):
        if not value:
            raise ConfigError(
                f"Invalid settings: auth.mode oidc needs auth.oidc.{key} "
                f"(e.g. NEXUS__AUTH__OIDC__{key.upper()}=...)"
            )
    if not oidc.algorithms:
        raise ConfigError("Invalid settings: auth.oidc.algorithms must name at least one")
    for algorithm in oidc.algorithms:
        if algorithm not in _ASYMMETRIC:
            raise ConfigError(
                f"Invalid settings: auth.oidc.algorithms may not hold {algorithm!r}; "
                f"use asymmetric ones: {', '.join(sorted(_ASYMMETRIC))}"
            )
    for number, rule in enumerate(auth.rules):
        if not rule.groups or not rule.algorithms:
            raise ConfigError(f"Invalid settings: auth.rules[{number}] needs groups and algorithms")
