"""The one place that maps settings to backend implementations.

Each builder imports its technology lazily, so a process on embedded defaults never
loads a database driver or the Kubernetes client.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from nexus._rust_queue import KeyedTokenBucket
from nexus.core.access import Access, AccessPolicy, OpenAccess, Rule, RuleAuthorizer, Verb
from nexus.core.callbacks import CallbackPolicy, Network, Notifier, WebhookSender, parse_networks
from nexus.core.ports import Executor, PayloadBuffer, RunStore, TemplateSource
from nexus.core.signing import RunTokens, UrlSigner
from nexus.errors import ConfigError
from nexus.metrics import Metrics
from nexus.settings import Settings


def make_store(settings: Settings) -> RunStore:
    if settings.cql_store_type == "sqlite":
        from nexus.backends.store.sqlite import SqliteRunStore

        path = settings.sqlite_store.path or str(settings.data_path / "nexus.db")
        return SqliteRunStore(path)
    from nexus.backends.store.cassandra import CassandraRunStore

    return CassandraRunStore(
        settings.scylla_cql_store, keyspaces=settings.cql_store_type == "cassandra-keyspaces"
    )


def signing_secret(settings: Settings) -> bytes:
    """The configured secret, or one generated once and kept in the data folder so every
    process on this machine (and every restart) signs alike."""
    configured = settings.s3_buffer.request_payload_proxy_configuration.sign_secret
    return _secret(settings, configured, ".sign-secret")


def webhook_secret(settings: Settings) -> bytes:
    return _secret(settings, settings.webhooks.secret, ".webhook-secret")


def make_run_tokens(settings: Settings) -> RunTokens:
    secret = settings.auth.receiver_token_secret
    return RunTokens(_secret(settings, secret, ".receiver-token-secret"))


def _secret(settings: Settings, configured: str, name: str) -> bytes:
    """``configured``, or a random secret made once and kept in ``data-dir/<name>``."""
    if configured:
        return configured.encode()
    path = settings.data_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_hex(32).encode())
    return path.read_bytes()


def make_signer(settings: Settings) -> UrlSigner:
    return UrlSigner(signing_secret(settings), settings.public_url)


def is_s3(settings: Settings) -> bool:
    return settings.s3_buffer.payload_storage_path.startswith(("s3://", "s3a://"))


def make_buffer(settings: Settings, signer: UrlSigner) -> PayloadBuffer:
    path = settings.s3_buffer.payload_storage_path
    if is_s3(settings):
        from nexus.backends.buffer.s3 import s3_buffer

        return s3_buffer(settings.s3_buffer)
    if path.startswith("file://"):
        path = path.removeprefix("file://")
    elif "://" in path:
        raise ConfigError(
            f"s3-buffer.payload-storage-path {path!r}: use s3a://bucket/prefix or a local folder"
        )
    from nexus.backends.buffer.local import local_buffer

    return local_buffer(path or settings.data_path / "payloads", signer)


def make_templates(settings: Settings) -> TemplateSource:
    if settings.template_source == "kubernetes":
        from nexus.backends.k8s.templates import KubernetesTemplateSource

        return KubernetesTemplateSource(settings)
    from nexus.backends.templates.folder import FolderTemplateSource

    return FolderTemplateSource(settings.templates_path)


def make_executor(settings: Settings, metrics: Metrics | None = None) -> Executor:
    if settings.executor == "kubernetes":
        from nexus.backends.k8s.shards import KubernetesExecutor

        return KubernetesExecutor(settings, metrics)
    from nexus.backends.k8s.local_executor import LocalExecutor

    return LocalExecutor(Path.cwd(), settings.data_path / "logs", settings.data_path / "jobs")


class _Checks(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


def make_access(
    settings: Settings, templates: TemplateSource
) -> tuple[AccessPolicy, _Checks | None]:
    """The run API's access policy of ``auth.mode``, and the backend it needs opened
    (``templates``: where oidc mode reads the templates' group annotations)."""
    auth = settings.auth
    limiter = KeyedTokenBucket(auth.caller_rate, auth.caller_burst) if auth.caller_rate else None
    if auth.mode == "kubernetes":
        from nexus.backends.k8s.access import KubernetesAccess

        reviews = KubernetesAccess(settings)
        return Access(reviews, reviews, auth.cache_ttl, limiter=limiter), reviews
    if auth.mode == "oidc":
        from nexus.backends.auth.oidc import OidcAuthenticator

        tokens = OidcAuthenticator(auth.oidc)
        rules = RuleAuthorizer(
            (
                Rule(
                    frozenset(rule.groups), tuple(rule.algorithms), frozenset(map(Verb, rule.verbs))
                )
                for rule in auth.rules
            ),
            templates,
        )
        return Access(tokens, rules, auth.cache_ttl, limiter=limiter), tokens
    return OpenAccess(), None


def make_notifier(settings: Settings, store: RunStore) -> tuple[Notifier, WebhookSender]:
    from nexus.backends.webhooks.http import HttpWebhookSender

    config = settings.webhooks
    sender = HttpWebhookSender()
    policy = CallbackPolicy(
        timeout=config.timeout,
        max_attempts=config.max_attempts,
        retry_base=config.retry_base,
        retry_max=config.retry_max,
    )
    notifier = Notifier(store, sender, webhook_secret(settings), policy, webhook_networks(settings))
    return notifier, sender


def webhook_networks(settings: Settings) -> list[Network]:
    try:
        return parse_networks(settings.webhooks.allowed_networks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
