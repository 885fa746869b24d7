"""``auth.mode: kubernetes``: the cluster nexus runs in says who a caller is and what
it may do.

A bearer token goes to the API server as a TokenReview (so service-account tokens and
whatever else the cluster's authenticator accepts work), and the identity it answers
goes back as a SubjectAccessReview of the verb on ``nexusalgorithmtemplates/runs`` named
by the algorithm, in ``auth.namespace``: teams grant runs of their templates with
ordinary Roles. nexus's own identity needs ``create`` on ``tokenreviews`` and
``subjectaccessreviews`` (the chart grants it). Any answer that is not a review — the API
server down, nexus not allowed to ask — is BackendUnavailable: nobody gets in unchecked.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec

from nexus.backends.k8s.client import ShardClient
from nexus.backends.k8s.shards import home_client
from nexus.core.access import Principal, Verb
from nexus.errors import BackendUnavailable, Unauthenticated
from nexus.settings import Settings

GROUP = "science.sneaksanddata.com"
RESOURCE = "nexusalgorithmtemplates"
SUBRESOURCE = "runs"
TOKEN_REVIEW = ("TokenReview", "authentication.k8s.io/v1", "tokenreviews")
ACCESS_REVIEW = ("SubjectAccessReview", "authorization.k8s.io/v1", "subjectaccessreviews")


class _User(msgspec.Struct, kw_only=True):
    username: str = ""
    uid: str = ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}


class _TokenReviewStatus(msgspec.Struct, kw_only=True):
    authenticated: bool = False
    user: _User = msgspec.field(default_factory=_User)
    error: str = ""


class _TokenReview(msgspec.Struct, kw_only=True):
    status: _TokenReviewStatus = msgspec.field(default_factory=_TokenReviewStatus)


class _AccessReviewStatus(msgspec.Struct, kw_only=True):
    allowed: bool = False


class _AccessReview(msgspec.Struct, kw_only=True):
    status: _AccessReviewStatus = msgspec.field(default_factory=_AccessReviewStatus)


R = TypeVar("R")
_TOKEN_REVIEW = msgspec.json.Decoder(_TokenReview)
_ACCESS_REVIEW = msgspec.json.Decoder(_AccessReview)


class KubernetesAccess:
    """Authenticator (TokenReview) and Authorizer (SubjectAccessReview) in one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._namespace = settings.auth.namespace or settings.runtime_namespace
        self._client: ShardClient | None = None

    async def open(self) -> None:
        self._client = await asyncio.to_thread(
            home_client,
            self._settings,
            "auth",
            self._namespace,
            "auth.mode: kubernetes checks tokens with",
        )

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _review(
        self,
        review: tuple[str, str, str],
        spec: dict[str, object],
        decoder: msgspec.json.Decoder[R],
    ) -> R:
        if self._client is None:
            raise BackendUnavailable("the Kubernetes access checks are not open")
        kind, api_version, plural = review
        response = await self._client.request(
            "create",
            "POST",
            f"/apis/{api_version}/{plural}",
            body={"apiVersion": api_version, "kind": kind, "spec": spec},
        )
        if response.status not in (200, 201):
            raise BackendUnavailable(
                f"Cannot check access: the Kubernetes API server ({self._client.source}) "
                f"refused a {kind} ({response.status}: {response.error().message})"
            )
        try:
            return decoder.decode(response.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BackendUnavailable(
                f"Cannot check access: the Kubernetes API server's {kind} does not decode: {exc}"
            ) from exc

    async def authenticate(self, token: str) -> Principal:
        status = (await self._review(TOKEN_REVIEW, {"token": token}, _TOKEN_REVIEW)).status
        if not status.authenticated:
            # The API server's own words say why (expired, unknown key, ...) without the
            # token; its generic text for a token of another issuer is kept as is.
            reason = status.error or "the cluster does not accept it"
            raise Unauthenticated(f"Invalid bearer token: {reason}")
        user = status.user
        return Principal(
            user=user.username,
            groups=tuple(user.groups),
            uid=user.uid,
            extra=user.extra,
        )

    async def allowed(self, principal: Principal, verb: Verb, algorithm: str) -> bool:
        spec: dict[str, object] = {
            "user": principal.user,
            "groups": list(principal.groups),
            "uid": principal.uid,
            "extra": principal.extra,
            "resourceAttributes": {
                "namespace": self._namespace,
                "verb": verb.value,
                "group": GROUP,
                "resource": RESOURCE,
                "subresource": SUBRESOURCE,
                "name": algorithm,
            },
        }
        return (await self._review(ACCESS_REVIEW, spec, _ACCESS_REVIEW)).status.allowed
