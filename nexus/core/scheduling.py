"""Scheduler use cases: accept a run, cancel it, re-tag it, and read it back.

The accept path does its I/O concurrently (payload upload and the run's record) and
answers only once both are durable; everything before that is pure validation, so a
refused request writes nothing. The Job is rendered later, by the launch pipeline's
BUFFERED step (:mod:`nexus.core.buffering`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from nexus.core.buffering import JobRenderer
from nexus.core.callbacks import Notifier
from nexus.core.launching import DRY_RUN_UID, utcnow
from nexus.core.models import (
    LifecycleStage as S,
)
from nexus.core.models import (
    ParentRef,
    Run,
    RunKey,
    SpecOverride,
    Template,
    Workgroup,
)
from nexus.core.overrides import apply_overrides
from nexus.core.pipeline import LaneStatus, LaunchPipeline
from nexus.core.ports import JobLauncher, PayloadBuffer, RunStore, TemplateSource
from nexus.core.tenancy import tenant_of
from nexus.core.units import format_duration, parse_duration
from nexus.core.watch import RunWatch
from nexus.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    InvalidTransition,
    LaunchError,
    NexusError,
    NoPayload,
    NotFound,
)

log = logging.getLogger("nexus.scheduler")

# Kubernetes object names (RFC 1123 subdomain): also keeps path tricks out of storage keys.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_REQUEST_ID = re.compile(r"^[0-9a-fA-F-]{1,64}$")
CANCELLATION_POLICIES = ("Background", "Foreground", "Orphan")


def check_algorithm_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise BadRequest(
            f"Invalid algorithm name {name[:80]!r}: use a Kubernetes object name "
            "(lower-case letters, digits, '-' and '.')"
        )


# A tag is any printable text: control characters (C0 with NUL, DEL, C1) would end up in
# logs, terminals and HTTP paths. 256 characters (1 KiB of UTF-8 at most) keep it far
# under Cassandra's 64 KiB partition key (checkpoints_by_tag is keyed by tag).
TAG_MAX_LENGTH = 256
_TAG_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_tag(tag: str, field: str = "tag") -> None:
    if len(tag) > TAG_MAX_LENGTH:
        raise BadRequest(
            f"Invalid {field}: {len(tag)} characters, at most {TAG_MAX_LENGTH} are allowed"
        )
    control = _TAG_CONTROL.search(tag)
    if control:
        raise BadRequest(
            f"Invalid {field}: control character U+{ord(control.group()):04X} at position "
            f"{control.start()}; a tag may hold any printable Unicode text (no C0/C1 control "
            "characters, NUL or DEL)"
        )


def check_request_id(run_id: str) -> None:
    if not _REQUEST_ID.match(run_id):
        raise NotFound(f"Provided request with identifier '{run_id[:80]}' not found")


# A signed payload URL lives at most a year: longer is no use to a run, and the expiry
# must stay a sane timestamp (S3 allows only 7 days; its buffer checks that itself).
MAX_PAYLOAD_VALID_FOR = 365 * 86400.0


def _payload_valid_for(text: str) -> float:
    allowed = (
        f"allowed: longer than 0s and at most {format_duration(MAX_PAYLOAD_VALID_FOR)} (365 days)"
    )
    try:
        valid_for = parse_duration(text, maximum=MAX_PAYLOAD_VALID_FOR)
    except ValueError as exc:
        raise BadRequest(f"Invalid payloadValidFor: {exc}; {allowed}") from None
    if valid_for <= 0:
        raise BadRequest(f"Invalid payloadValidFor: must be longer than zero; {allowed}")
    return valid_for


def new_run_id() -> str:
    """A UUID version 7 (RFC 9562) as text: 48 bits of Unix milliseconds, 74 random bits.

    Ids made later sort later, so the store's primary key (algorithm, id) and its by-host
    index grow at their right edge instead of at random pages: an insert touches the
    pages the previous one did, and a commit writes a fraction of the WAL that random
    (version 4) ids cost once the table outgrows the cache. Clients still get a UUID.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76
        | (rand >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | rand & 0x3FFF_FFFF_FFFF_FFFF
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def content_hash(payload: bytes | memoryview) -> str:
    """Base64 of the lower-case hex CRC-32 of the payload, as the Go system stores it."""
    return base64.b64encode(f"{zlib.crc32(payload) & 0xFFFFFFFF:08x}".encode()).decode()


class SchedulerConfig:
    def __init__(
        self,
        *,
        instance_id: str,
        payload_valid_for: float,
        max_wait: float,
        tenant_by_caller: bool = False,
    ) -> None:
        self.instance_id = instance_id
        self.payload_valid_for = payload_valid_for
        self.max_wait = max_wait
        self.tenant_by_caller = tenant_by_caller  # tenants.tenant-by: caller (core.tenancy)


class Scheduler:
    def __init__(
        self,
        store: RunStore,
        buffer: PayloadBuffer,
        templates: TemplateSource,
        launcher: JobLauncher,
        pipeline: LaunchPipeline,
        watch: RunWatch,
        renderer: JobRenderer,
        config: SchedulerConfig,
        *,
        notifier: Notifier | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.notifier = notifier  # checks callback URLs; None: runs may not name one
        self.now = now  # the clock runs are stamped with (virtual in tests)
        self.store = store
        self.buffer = buffer
        self.templates = templates
        self.launcher = launcher
        self.pipeline = pipeline
        self.watch = watch
        self.renderer = renderer
        self.config = config

    # --- accept ------------------------------------------------------------------------

    async def _check_parent(self, parent: ParentRef, dry_run: bool) -> None:
        """A run's parent must exist, except a dry run's, as in the Go system (its SDK's
        remote dry runs rely on it): that Job gets a stand-in owner. Either way the id
        must be one nexus could have given."""
        check_algorithm_name(parent.algorithm_name)
        known = bool(_REQUEST_ID.match(parent.request_id)) and (
            dry_run or await self.store.get(parent.algorithm_name, parent.request_id) is not None
        )
        if not known:
            raise BadRequest(
                f"Parent request {parent.algorithm_name}/{parent.request_id} does not exist"
            )

    async def accept(
        self,
        algorithm: str,
        parameters: bytes | memoryview,
        *,
        custom: SpecOverride | None = None,
        api_version: str = "",
        tag: str = "",
        parent: ParentRef | None = None,
        payload_valid_for: str | None = None,
        dry_run: bool = False,
        idempotency_key: str | None = None,
        callback_url: str = "",
        resubmitted_from: str = "",
        caller: str | None = None,
    ) -> str:
        """Store and queue a run; ``caller``: who asked, when authenticated."""
        check_algorithm_name(algorithm)
        check_tag(tag)
        if callback_url:
            if self.notifier is None:
                raise BadRequest("callbackUrl is not supported by this scheduler")
            await self.notifier.check(callback_url)
        template = await self.templates.template(algorithm)
        if template is None:
            raise BadRequest(
                f"No valid configuration found for: {algorithm}. Create a "
                f"NexusAlgorithmTemplate named '{algorithm}' or check the algorithm name."
            )
        spec = apply_overrides(template.spec, custom)
        if spec.workgroup_ref is None:
            raise BadRequest(f"Template '{algorithm}' names no workgroupRef; cannot place the run")
        workgroup = await self.templates.workgroup(spec.workgroup_ref.name)
        if workgroup is None:
            raise BadRequest(
                f"Cannot assign requested workgroup '{spec.workgroup_ref.name}' for {algorithm}: "
                "no NexusAlgorithmWorkgroup of that name exists"
            )
        cluster = workgroup.spec.cluster
        if not dry_run and cluster not in self.launcher.shards():
            raise BadRequest(
                f"Workgroup '{workgroup.name}' names cluster '{cluster}', which is not a "
                f"configured shard (known: {', '.join(sorted(self.launcher.shards())) or 'none'})"
            )
        if spec.payload_serialization == "backend":
            raise BadRequest(
                f"Template '{algorithm}' sets payloadConfiguration.payloadSerialization: "
                "backend (the payload kept in the run store), which nexus does not support; "
                "set it to s3 or remove it"
            )
        # The request's lifetime wins over the template's, which wins over the settings'.
        valid_for = self.config.payload_valid_for
        if payload_valid_for or spec.payload_valid_for:
            valid_for = _payload_valid_for(payload_valid_for or spec.payload_valid_for)
        if parent is not None:
            await self._check_parent(parent, dry_run)
        if idempotency_key:
            existing = await self.store.find_idempotent(algorithm, idempotency_key)
            if existing is not None:
                return existing
        tenant = tenant_of(template, workgroup, caller if self.config.tenant_by_caller else None)
        # Before anything is written: a 429 leaves no trace (SPEC §2).
        self.pipeline.check_room(cluster, tenant)

        run_id = new_run_id()
        payload_url = self.buffer.payload_url(algorithm, run_id, valid_for)
        now = self.now()
        run = Run(
            algorithm=algorithm,
            id=run_id,
            lifecycle_stage=S.NEW,
            payload_uri=payload_url,
            received_by_host=self.config.instance_id,
            received_at=now,
            last_modified=now,
            applied_configuration=spec,
            configuration_overrides=custom,
            content_hash=content_hash(parameters),
            tag=tag,
            api_version=api_version,
            job_uid=DRY_RUN_UID if dry_run else "",
            parent=parent,
            cluster=cluster,
            payload_valid_for=format_duration(valid_for),
            callback_url=callback_url,
            resubmitted_from=resubmitted_from,
            created_by=caller or "",
        )
        # The payload upload runs as a task while this one writes the store row (one task
        # instead of gather's two: this is the hot path); both outcomes are judged below.
        # Claimed before the first write: the sweep must not judge a row still being written.
        self.pipeline.in_flight.claim(algorithm, run_id)
        upload = asyncio.ensure_future(self.buffer.put(algorithm, run_id, parameters))
        submitted = False
        try:
            created: str | Exception
            try:
                created = await self.store.create(run, None, idempotency_key)
            except asyncio.CancelledError:
                upload.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handled with the upload's outcome
                created = exc
            stored: Exception | None = None
            try:
                await upload
            except Exception as exc:  # noqa: BLE001 - handled by _abandon
                stored = exc
            if isinstance(created, Exception) or stored is not None:
                await self._abandon(run, stored, created)
            if created != run_id:  # an idempotency key raced us and lost: the first run wins
                return created
            # Refused by a lane that filled meanwhile, the stored run is left to the sweep:
            # it is accepted all the same (it is durable), only launched later.
            self.pipeline.submit(RunKey(algorithm, run_id, cluster=cluster, tenant=tenant))
            submitted = True
        finally:
            if not submitted:
                # Our row may be stored without being queued (a request cancelled mid-write,
                # an abandon that could not mark it): the periodic sweep must look again.
                self.pipeline.in_flight.release(algorithm, run_id, left_behind=True)
        return run_id

    async def _abandon(
        self, run: Run, stored: Exception | None, created: str | Exception
    ) -> NoReturn:
        """One of the two writes failed: refuse the request and leave no live run behind."""
        if not isinstance(created, Exception):
            try:
                await self.store.transition(
                    run.algorithm,
                    run.id,
                    S.SCHEDULING_FAILED,
                    algorithm_failure_cause="Submission lost. Please resend the request.",
                    algorithm_failure_details=(
                        "The payload could not be stored; the request was refused."
                    ),
                )
            except NexusError:
                log.warning("could not mark abandoned run %s/%s", run.algorithm, run.id)
        failure = created if isinstance(created, Exception) else stored
        if isinstance(failure, NexusError):
            raise failure
        raise BackendUnavailable(
            f"Request buffering failed for: {run.algorithm}/{run.id}"
        ) from failure

    async def resubmit(
        self,
        algorithm: str,
        run_id: str,
        *,
        custom: SpecOverride | None = None,
        tag: str | None = None,
        caller: str | None = None,
    ) -> str:
        """A new run of a finished one: its stored payload, its overrides (or ``custom``),
        its tag (or ``tag``), parent, payload lifetime and webhook; the template as it is
        now; created by ``caller`` (who resubmits, not who created the original). 404 for
        an unknown run, 409 while it is not finished or once its payload is gone
        (docs/runs-api.md)."""
        original = await self.get(algorithm, run_id)
        if not original.lifecycle_stage.is_terminal:
            raise Conflict(
                f"Run {run_id} is {original.lifecycle_stage.value}; only a finished run can "
                "be resubmitted (cancel it first, or wait for it to end)"
            )
        try:
            payload = await self.buffer.get(algorithm, run_id)
        except NotFound:
            raise Conflict(
                f"Run {run_id} cannot be resubmitted: its payload is no longer stored"
            ) from None
        return await self.accept(
            algorithm,
            payload,
            custom=original.configuration_overrides if custom is None else custom,
            api_version=original.api_version,
            tag=original.tag if tag is None else tag,
            parent=original.parent,
            payload_valid_for=original.payload_valid_for or None,
            dry_run=original.job_uid == DRY_RUN_UID,
            callback_url=original.callback_url,
            resubmitted_from=original.id,
            caller=caller,
        )

    # --- reads -------------------------------------------------------------------------

    async def get(self, algorithm: str, run_id: str) -> Run:
        check_algorithm_name(algorithm)
        check_request_id(run_id)
        run = await self.store.get(algorithm, run_id)
        if run is None:
            raise NotFound(f"Provided request with identifier '{run_id}' not found")
        return run

    async def wait_result(self, algorithm: str, run_id: str, wait: float) -> Run:
        """The run, as soon as it is finished or when ``wait`` seconds have passed."""
        deadline = time.monotonic() + min(max(wait, 0.0), self.config.max_wait)
        while True:
            run = await self.get(algorithm, run_id)
            remaining = deadline - time.monotonic()
            if run.lifecycle_stage.is_terminal or remaining <= 0:
                return run
            await self.watch.wait(algorithm, run_id, min(remaining, 0.5))

    async def submission(self, algorithm: str, run_id: str) -> dict[str, Any]:
        """The Job that was (or will be) submitted: a run still NEW has none stored yet,
        so it is rendered now the way the pipeline will (its result URLs' signatures
        may differ from the launched ones: they are signed again then)."""
        run = await self.get(algorithm, run_id)
        entry = await self.store.get_submission(algorithm, run_id)
        if entry is None and run.lifecycle_stage is S.NEW:
            try:
                entry = await self.renderer.render(run)
            except LaunchError as exc:
                raise NotFound(
                    f"No Job can be rendered for request '{run_id}': {exc.message}"
                ) from None
        if entry is None:
            raise NotFound(f"No buffered Job for request '{run_id}'")
        return entry.template

    async def payload_uri(self, algorithm: str, run_id: str) -> str:
        run = await self.get(algorithm, run_id)
        if not run.payload_uri:
            raise NoPayload(f"Specified request {run_id} does not have a serialized payload")
        return run.payload_uri

    async def by_tag(self, tag: str) -> list[Run]:
        return await self.store.by_tag(tag)

    async def update_tag(self, algorithm: str, run_id: str, tag: str) -> Run:
        check_algorithm_name(algorithm)
        check_request_id(run_id)
        check_tag(tag, "newTag")
        return await self.store.update_tag(algorithm, run_id, tag)

    # --- cancel ------------------------------------------------------------------------

    async def cancel(
        self,
        algorithm: str,
        run_id: str,
        *,
        reason: str,
        initiator: str,
        policy: str = "Background",
    ) -> Run:
        if policy not in CANCELLATION_POLICIES:
            raise BadRequest(
                f"Invalid cancellation request: invalid CancellationPolicy '{policy}', "
                f"use one of {', '.join(CANCELLATION_POLICIES)}"
            )
        run = await self.get(algorithm, run_id)
        if run.lifecycle_stage.is_terminal:
            raise Conflict(
                f"Run {run_id} already finished as {run.lifecycle_stage.value}; nothing to cancel"
            )
        try:
            cancelled = await self.store.transition(
                algorithm,
                run_id,
                S.CANCELLED,
                algorithm_failure_cause=f"Cancelled by '{initiator}'",
                algorithm_failure_details=f"Run cancelled, reason: '{reason}'",
            )
        except InvalidTransition as exc:
            raise Conflict(exc.message) from None
        self.watch.notify(algorithm, run_id)
        if run.job_uid and run.job_uid != DRY_RUN_UID or run.lifecycle_stage is S.BUFFERED:
            try:
                await self.launcher.cancel(run.cluster, run_id, policy)
            except NexusError as exc:
                log.warning("run %s cancelled but its Job could not be deleted: %s", run_id, exc)
        await self._cancel_children(cancelled, initiator, policy)
        return cancelled

    async def _cancel_children(self, parent: Run, initiator: str, policy: str) -> None:
        """Children go the way of their parent, with the policy the parent's cancel used."""
        for child in await self.store.children(ParentRef(parent.id, parent.algorithm)):
            if child.lifecycle_stage.is_terminal:
                continue
            try:
                await self.cancel(
                    child.algorithm,
                    child.id,
                    initiator=initiator,
                    reason=f"parent request {parent.id} was cancelled",
                    policy=policy,
                )
            except (Conflict, NotFound):
                continue

    async def logs(self, algorithm: str, run_id: str, tail_lines: int) -> str:
        """The run's Pod (or local process) log tail, from its shard."""
        run = await self.get(algorithm, run_id)
        if run.job_uid in ("", DRY_RUN_UID):  # set with RUNNING: nothing was started yet
            raise NotFound(f"No log for request '{run_id}': it has not been launched")
        return await self.launcher.logs(run.cluster, run_id, tail_lines)

    # --- overview (the UI) -------------------------------------------------------------

    async def catalog(self) -> tuple[list[Template], list[Workgroup]]:
        return await self.templates.catalog()

    def lanes(self) -> list[LaneStatus]:
        return self.pipeline.lanes(self.launcher.shards())
