"""The run state machine (SPEC §5): every allowed and every refused transition."""

from __future__ import annotations

import itertools

import pytest

from nexus.core import lifecycle
from nexus.core.models import (
    FAILURE_STAGES,
    PENDING_STAGES,
    TERMINAL_STAGES,
)
from nexus.core.models import (
    LifecycleStage as S,
)
from nexus.errors import InvalidTransition

TERMINAL = {S.COMPLETED, S.FAILED, S.SCHEDULING_FAILED, S.DEADLINE_EXCEEDED, S.CANCELLED}

# Written out from the contract, not copied from the code: NEW -> BUFFERED -> RUNNING ->
# a terminal stage. NEW may only be refused at launch or cancelled (no Job exists yet);
# BUFFERED may end in any terminal stage because the Job can report before RUNNING is
# committed; RUNNING goes back to BUFFERED only when its process was lost with a
# crashed nexus (a disruption: the run is launched again); nothing leaves a terminal stage.
EXPECTED: dict[S, set[S]] = {
    S.NEW: {S.BUFFERED, S.SCHEDULING_FAILED, S.CANCELLED},
    S.BUFFERED: {S.RUNNING} | TERMINAL,
    S.RUNNING: {S.BUFFERED} | TERMINAL,
    **{stage: set() for stage in TERMINAL},
}

ALL_PAIRS = list(itertools.product(S, S))
ALLOWED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in EXPECTED[a]]
REFUSED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in EXPECTED[a]]


def _id(pair: tuple[S, S]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_stage_sets_match_the_contract():
    assert set(TERMINAL_STAGES) == TERMINAL
    assert set(FAILURE_STAGES) == TERMINAL - {S.COMPLETED}
    assert set(PENDING_STAGES) == {S.NEW, S.BUFFERED}
    assert [stage.value for stage in S] == [
        "NEW",
        "BUFFERED",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "SCHEDULING_FAILED",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
    ]
    for stage in S:
        assert stage.is_terminal == (stage in TERMINAL)


def test_the_table_covers_every_stage_exactly_as_the_contract_says():
    assert set(lifecycle.ALLOWED) == set(S)
    assert {stage: set(targets) for stage, targets in lifecycle.ALLOWED.items()} == EXPECTED


@pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=_id)
def test_allowed_transition(pair):
    current, target = pair
    assert lifecycle.can_transition(current, target)
    lifecycle.check("run-1", current, target)  # does not raise


@pytest.mark.parametrize("pair", REFUSED_PAIRS, ids=_id)
def test_refused_transition(pair):
    current, target = pair
    assert not lifecycle.can_transition(current, target)
    with pytest.raises(InvalidTransition) as caught:
        lifecycle.check("run-1", current, target)
    message = caught.value.message
    assert "run-1" in message and current.value in message and target.value in message
    assert caught.value.status == 409


@pytest.mark.parametrize("stage", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_terminal_stages_are_frozen(stage):
    for target in S:
        assert not lifecycle.can_transition(stage, target)
        with pytest.raises(InvalidTransition, match="already finished"):
            lifecycle.check("run-9", stage, target)


@pytest.mark.parametrize("stage", [S.NEW, S.BUFFERED, S.RUNNING], ids=lambda s: s.value)
def test_no_stage_transitions_to_itself_or_back(stage):
    order = [S.NEW, S.BUFFERED, S.RUNNING]
    disruption = {(S.RUNNING, S.BUFFERED)}  # the one way back: launched again
    for earlier in order[: order.index(stage) + 1]:
        assert lifecycle.can_transition(stage, earlier) == ((stage, earlier) in disruption)
    with pytest.raises(InvalidTransition, match=f"is {stage.value}"):
        lifecycle.check("run-2", stage, stage)


def test_nothing_goes_back_to_new():
    assert all(not lifecycle.can_transition(stage, S.NEW) for stage in S)


def test_new_cannot_skip_to_running_or_a_job_outcome():
    for target in (S.RUNNING, S.COMPLETED, S.FAILED, S.DEADLINE_EXCEEDED):
        assert not lifecycle.can_transition(S.NEW, target)
