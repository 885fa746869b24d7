"""A run's history: the event each stage change and webhook attempt adds (pure).

The stores write the event in the same conditional write as the change itself (one
SQLite transaction; the Cassandra CAS UPDATE appends it to the run row's list), so the
history never shows a change that did not happen, nor misses one that did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from nexus.core.models import CallbackState, LifecycleStage, Run, RunEvent

STAGE = "stage"
WEBHOOK = "webhook"

# Why a run moves when the writer gives no failure cause of its own.
_CAUSES: dict[tuple[LifecycleStage | None, LifecycleStage], str] = {
    (None, LifecycleStage.NEW): "request accepted",
    (LifecycleStage.NEW, LifecycleStage.BUFFERED): "Job rendered and buffered",
    (LifecycleStage.BUFFERED, LifecycleStage.RUNNING): "Job launched",
    (LifecycleStage.RUNNING, LifecycleStage.BUFFERED): "disrupted: the Job is launched again",
    (LifecycleStage.RUNNING, LifecycleStage.COMPLETED): "result reported",
    (LifecycleStage.BUFFERED, LifecycleStage.COMPLETED): "result reported",
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunEvent)


def created_event(run: Run) -> RunEvent:
    at = run.received_at or run.last_modified
    assert at is not None, "a run is created with its time"
    return RunEvent(
        at=at, kind=STAGE, stage=run.lifecycle_stage, cause=_CAUSES[(None, LifecycleStage.NEW)]
    )


def transition_event(current: Run, target: LifecycleStage, fields: dict[str, Any]) -> RunEvent:
    """The event of moving ``current`` to ``target`` writing ``fields`` (with its
    ``last_modified``): its cause is the failure cause the writer records, else what
    this change means."""
    cause = fields.get("algorithm_failure_cause") or _CAUSES.get(
        (current.lifecycle_stage, target), ""
    )
    if target is LifecycleStage.RUNNING and current.cluster:
        cause = f"{cause} on cluster {current.cluster}"
    return RunEvent(
        at=fields["last_modified"],
        kind=STAGE,
        stage=target,
        previous=current.lifecycle_stage,
        cause=cause,
    )


def webhook_event(
    expected: CallbackState | None, state: CallbackState, at: datetime
) -> RunEvent | None:
    """The event of a webhook state change: an attempt's outcome, or None for a claim
    (a claim counts the attempt up; its outcome keeps the count)."""
    if expected is None or state.attempts != expected.attempts:
        return None
    if state.delivered_at is not None:
        cause = f"attempt {state.attempts}: delivered (HTTP {state.last_status})"
    elif state.last_error or state.last_status:
        cause = f"attempt {state.attempts}: {state.last_error or f'HTTP {state.last_status}'}"
    else:
        return None
    if state.gave_up:
        cause += "; given up"
    return RunEvent(at=at, kind=WEBHOOK, cause=cause)


def encode_event(event: RunEvent) -> str:
    return _encoder.encode(event).decode()


def decode_event(text: str) -> RunEvent:
    return _decoder.decode(text)
