"""What the client sends and returns: small msgspec Structs, camelCase on the wire."""

from __future__ import annotations

import msgspec

# The stages of SPEC §5; the client keeps its own copy so it imports nothing server-side.
TERMINAL_STAGES = frozenset(
    {"COMPLETED", "FAILED", "SCHEDULING_FAILED", "DEADLINE_EXCEEDED", "CANCELLED"}
)
CANCELLATION_POLICIES = ("Background", "Foreground", "Orphan")


class RunResult(msgspec.Struct, rename="camel", kw_only=True):
    """A run's status as ``results/...`` answers it (``algorithm_name`` only by tag)."""

    request_id: str
    status: str
    result_uri: str = ""
    run_error_message: str = ""
    algorithm_name: str = ""

    @property
    def finished(self) -> bool:
        """True once the run reached a terminal stage."""
        return self.status in TERMINAL_STAGES

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def failed(self) -> bool:
        """Finished, but not COMPLETED (FAILED, CANCELLED, DEADLINE_EXCEEDED, ...)."""
        return self.finished and not self.succeeded


class ParentRequest(msgspec.Struct, rename="camel", frozen=True):
    """The run a new run hangs under: cancelling the parent cancels the child."""

    request_id: str
    algorithm_name: str


class RunCreated(msgspec.Struct, rename="camel"):
    request_id: str


class CheckResult(msgspec.Struct):
    is_processed: bool


run_result_decoder = msgspec.json.Decoder(RunResult)
run_results_decoder = msgspec.json.Decoder(list[RunResult])
run_created_decoder = msgspec.json.Decoder(RunCreated)
check_decoder = msgspec.json.Decoder(CheckResult)
encoder = msgspec.json.Encoder()


class RunSummary(msgspec.Struct, rename="camel", kw_only=True):
    """One run of a listing (``GET runs``)."""

    algorithm: str
    request_id: str
    stage: str
    tag: str = ""
    received_at: str | None = None
    sent_at: str | None = None
    last_modified: str | None = None
    cluster: str = ""
    parent: ParentRequest | None = None
    result_uri: str = ""
    error_cause: str = ""
    error_details: str = ""
    resubmitted_from: str = ""
    callback_url: str = ""


class RunPage(msgspec.Struct, rename="camel", kw_only=True):
    """A page of a listing; ``next_cursor`` asks for the next (None: this was the last)."""

    runs: list[RunSummary]
    next_cursor: str | None = None


class RunEvent(msgspec.Struct, rename="camel", kw_only=True):
    """One entry of a run's history: a stage change, or a webhook delivery attempt."""

    at: str
    kind: str
    stage: str | None = None
    previous: str | None = None
    cause: str = ""


class RunHistory(msgspec.Struct, rename="camel", kw_only=True):
    algorithm: str
    request_id: str
    events: list[RunEvent]


run_page_decoder = msgspec.json.Decoder(RunPage)
run_history_decoder = msgspec.json.Decoder(RunHistory)
