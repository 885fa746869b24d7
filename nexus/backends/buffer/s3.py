"""Production payload buffer: an S3 bucket (AWS, or any S3-compatible store) via obstore.

``s3-buffer.payload-storage-path`` is ``s3a://bucket/prefix`` (or ``s3://``). Objects use
the layout of :mod:`objects`; the algorithm downloads its payload, and uploads and the
client downloads its result, with presigned URLs (SigV4, signed locally from the
configured credentials, no request to the store). Without access keys the store falls
back to the usual AWS sources (environment, web identity, instance metadata).

Client limits are kept short on purpose: a store that is down must turn into a quick 503
(BackendUnavailable), not a request that hangs for the client library's default minutes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from nexus.backends.buffer.objects import ObjectPayloadBuffer, ObjectRef, UrlMethod
from nexus.errors import BackendUnavailable, BadRequest, ConfigError
from nexus.settings import S3Buffer

if TYPE_CHECKING:  # a TypedDict of obstore's stubs, not there at run time
    from obstore.store import S3Config

# SigV4 presigned URLs cannot live longer than seven days.
MAX_URL_LIFETIME = 7 * 24 * 3600


def parse_storage_path(path: str) -> tuple[str, str]:
    """``s3a://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parts = urlsplit(path)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise ConfigError(
            f"Invalid settings: s3-buffer.payload-storage-path {path!r} must look like "
            "s3a://bucket/prefix"
        )
    return parts.netloc, parts.path.strip("/")


_S3_ERROR = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")


def _short(exc: Exception) -> str:
    """obstore messages end in the S3 error document and a multi-line debug dump: keep
    the first line and the S3 error code and message."""
    text = str(exc)
    first = text.split("\n", 1)[0].removesuffix('<?xml version="1.0" encoding="UTF-8"?>')
    error = _S3_ERROR.search(text)
    return f"{first.rstrip(': ')} ({error[1]}: {error[2]})" if error else first


class S3PayloadBuffer(ObjectPayloadBuffer):
    """The object buffer with an S3 health check and one-line error messages."""

    def __init__(
        self, store: S3Store, bucket: str, prefix: str, *, describe: str, multipart_threshold: int
    ) -> None:
        super().__init__(
            store, prefix, self._sign, describe=describe, multipart_threshold=multipart_threshold
        )
        self._s3 = store
        self._bucket = bucket

    @property
    def object_store(self) -> S3Store:
        """The underlying obstore store (for maintenance scripts and tests)."""
        return self._s3

    def _unavailable(self, action: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"Payload storage ({self._describe}) failed to {action}: {_short(exc)}"
        )

    async def ping(self) -> None:
        """Listing the prefix proves the bucket exists and the credentials are accepted
        (a HEAD of a missing key answers 404 either way)."""
        try:
            await obstore.list_with_delimiter_async(self._s3, self._prefix.rstrip("/") or None)
        except (BaseError, OSError) as exc:
            raise self._unavailable(f"list bucket '{self._bucket}'", exc) from exc

    def _sign(self, method: UrlMethod, ref: ObjectRef, valid_for: float) -> str:
        if valid_for > MAX_URL_LIFETIME:
            raise BadRequest(
                f"Invalid payloadValidFor: S3 presigned URLs live at most 7 days "
                f"({MAX_URL_LIFETIME}s), {int(valid_for)}s was asked"
            )
        try:
            return obstore.sign(self._s3, method, ref.key, timedelta(seconds=valid_for))
        except (BaseError, OSError) as exc:
            raise self._unavailable("sign a URL", exc) from exc


def s3_buffer(config: S3Buffer) -> S3PayloadBuffer:
    bucket, prefix = parse_storage_path(config.payload_storage_path)
    if config.payload_valid_for > MAX_URL_LIFETIME:
        raise ConfigError(
            "Invalid settings: s3-buffer.payload-valid-for must not exceed 168h "
            "(the longest an S3 presigned URL can live)"
        )
    options: S3Config = {
        "region": config.region,
        "virtual_hosted_style_request": config.virtual_hosted_style,
    }
    if config.endpoint:
        options["endpoint"] = config.endpoint.rstrip("/")
    if config.access_key_id or config.secret_access_key:
        options["access_key_id"] = config.access_key_id
        options["secret_access_key"] = config.secret_access_key
    try:
        store = S3Store(
            bucket,
            config=options,
            client_options={
                "allow_http": config.endpoint.startswith("http://"),
                "connect_timeout": timedelta(seconds=config.connect_timeout),
                "timeout": timedelta(seconds=config.request_timeout),
            },
            retry_config={
                "max_retries": config.max_retries,
                "retry_timeout": timedelta(seconds=config.retry_timeout),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )
    except (BaseError, ValueError) as exc:
        raise ConfigError(f"Invalid settings: s3-buffer: {_short(exc)}") from exc
    where = config.endpoint or f"AWS {config.region}"
    return S3PayloadBuffer(
        store,
        bucket,
        prefix,
        describe=f"s3://{bucket}/{prefix} at {where}",
        multipart_threshold=int(config.multipart_threshold),
    )
