"""Wire Structs: the JSON shapes of the v1 API, camelCase exactly as the Go clients send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from nexus.core.listing import StageCount
from nexus.core.models import (
    CallbackState,
    LifecycleStage,
    ParentRef,
    Run,
    RunEvent,
    SpecOverride,
    Template,
    Workgroup,
)


class _Wire(msgspec.Struct, rename="camel", kw_only=True):
    pass


class RunRequest(_Wire):
    # Raw keeps the payload as the client's own bytes: it is stored without re-encoding.
    algorithm_parameters: msgspec.Raw
    custom_configuration: SpecOverride | None = None
    request_api_version: str | None = None
    tag: str | None = None
    parent_request: ParentRef | None = None
    payload_valid_for: str | None = None
    callback_url: str | None = None  # POSTed the result when the run ends (docs/webhooks.md)


class RunCreated(_Wire):
    request_id: str


class RequestResult(_Wire):
    request_id: str
    status: str
    result_uri: str
    run_error_message: str


class TaggedRequestResult(RequestResult):
    algorithm_name: str


class CancellationRequest(_Wire):
    reason: str | None = None
    initiator: str | None = None
    cancellation_policy: str | None = None


class TagUpdateRequest(_Wire):
    new_tag: str


class AlgorithmResult(_Wire):
    result_uri: str | None = None
    error_cause: str | None = None
    error_details: str | None = None


class ResubmitRequest(_Wire, forbid_unknown_fields=True):
    """The optional body of a resubmit: what to change from the original run."""

    custom_configuration: SpecOverride | None = None
    tag: str | None = None


class RunSummary(_Wire):
    """One run in a listing (GET /algorithm/v1/runs; docs/runs-api.md)."""

    algorithm: str
    request_id: str
    stage: LifecycleStage
    tag: str
    received_at: datetime | None
    sent_at: datetime | None
    last_modified: datetime | None
    cluster: str
    parent: ParentRef | None
    result_uri: str
    error_cause: str
    error_details: str
    resubmitted_from: str
    callback_url: str
    created_by: str  # the authenticated caller who created it; empty in auth.mode none


class RunList(_Wire, omit_defaults=True):
    runs: list[RunSummary]
    next_cursor: str | None = None  # absent on the last page


class RunCounts(_Wire):
    since: datetime
    until: datetime
    counts: list[StageCount]


class RunHistory(_Wire):
    algorithm: str
    request_id: str
    events: list[RunEvent]


class CheckResponse(msgspec.Struct):
    is_processed: bool


run_request_decoder = msgspec.json.Decoder(RunRequest)
resubmit_decoder = msgspec.json.Decoder(ResubmitRequest)
cancel_decoder = msgspec.json.Decoder(CancellationRequest)
tag_update_decoder = msgspec.json.Decoder(TagUpdateRequest)
result_decoder = msgspec.json.Decoder(AlgorithmResult)
encoder = msgspec.json.Encoder()

ZERO_TIME = "0001-01-01T00:00:00Z"


def request_result(run: Run) -> RequestResult:
    return RequestResult(
        request_id=run.id,
        status=run.lifecycle_stage.value,
        result_uri=run.result_uri if run.lifecycle_stage.value == "COMPLETED" else "",
        run_error_message=run.algorithm_failure_cause
        if run.lifecycle_stage.is_terminal and run.lifecycle_stage.value != "COMPLETED"
        else "",
    )


def run_summary(run: Run) -> RunSummary:
    return RunSummary(
        algorithm=run.algorithm,
        request_id=run.id,
        stage=run.lifecycle_stage,
        tag=run.tag,
        received_at=run.received_at,
        sent_at=run.sent_at,
        last_modified=run.last_modified,
        cluster=run.cluster,
        parent=run.parent,
        result_uri=run.result_uri if run.lifecycle_stage is LifecycleStage.COMPLETED else "",
        error_cause=run.algorithm_failure_cause,
        error_details=run.algorithm_failure_details,
        resubmitted_from=run.resubmitted_from,
        callback_url=run.callback_url,
        created_by=run.created_by,
    )


def tagged_result(run: Run) -> TaggedRequestResult:
    return TaggedRequestResult(
        request_id=run.id,
        algorithm_name=run.algorithm,
        status=run.lifecycle_stage.value,
        result_uri=run.result_uri,
        run_error_message=run.algorithm_failure_cause,
    )


def _time(value: datetime | None) -> str:
    if value is None:
        return ZERO_TIME
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def checkpoint(run: Run) -> dict[str, Any]:
    """The metadata endpoint's body: the checkpoint with its snake_case column names."""
    body: dict[str, Any] = {
        "algorithm": run.algorithm,
        "id": run.id,
        "lifecycle_stage": run.lifecycle_stage.value,
        "payload_uri": run.payload_uri,
        "result_uri": run.result_uri,
        "algorithm_failure_cause": run.algorithm_failure_cause,
        "algorithm_failure_details": run.algorithm_failure_details,
        "received_by_host": run.received_by_host,
        "received_at": _time(run.received_at),
        "sent_at": _time(run.sent_at),
        "last_modified": _time(run.last_modified),
        "content_hash": run.content_hash,
        "tag": run.tag,
        "api_version": run.api_version,
        "job_uid": run.job_uid,
        "payload_valid_for": run.payload_valid_for,
    }
    if run.applied_configuration is not None:
        body["applied_configuration"] = run.applied_configuration
    if run.configuration_overrides is not None:
        body["configuration_overrides"] = run.configuration_overrides
    if run.parent is not None:
        body["parent"] = run.parent
    if run.resubmitted_from:
        body["resubmitted_from"] = run.resubmitted_from
    if run.created_by:
        body["created_by"] = run.created_by
    if run.callback_url:
        body["callback_url"] = run.callback_url
        body["callback_state"] = run.callback_state or CallbackState()
        body["callback_done_at"] = _time(run.callback_done_at) if run.callback_done_at else None
    return body


class Catalog(_Wire):
    """``GET /algorithm/v1/templates``: the manifests as nexus reads them."""

    templates: list[Template]
    workgroups: list[Workgroup]
