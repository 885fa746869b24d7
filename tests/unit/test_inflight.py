"""The in-flight registry: claim/release and the left-behind count the sweep watches."""

from __future__ import annotations

import pytest

from nexus.core.inflight import InFlight


def test_a_run_is_claimed_once_until_released():
    runs = InFlight()
    assert runs.claim("algo", "r1")
    assert not runs.claim("algo", "r1")  # queued already: nobody queues it twice
    assert ("algo", "r1") in runs and len(runs) == 1
    assert runs.claim("other", "r1")  # keyed by algorithm and id
    runs.release("algo", "r1")
    assert ("algo", "r1") not in runs
    assert runs.claim("algo", "r1")  # e.g. found by a later sweep


def test_only_a_run_let_go_while_pending_moves_the_left_behind_count():
    runs = InFlight()
    runs.claim("algo", "done")
    runs.release("algo", "done")  # launched, failed, cancelled: nothing for the sweep
    assert runs.left_behind == 0
    runs.claim("algo", "pending")
    runs.release("algo", "pending", left_behind=True)  # a full lane, a store outage
    assert runs.left_behind == 1 and len(runs) == 0


def test_releasing_a_run_not_claimed_is_a_bug_and_changes_nothing():
    runs = InFlight()
    runs.claim("algo", "r1")
    runs.release("algo", "r1")
    with pytest.raises(KeyError):
        runs.release("algo", "r1", left_behind=True)
    assert runs.left_behind == 0
