"""The run lifecycle as a pure state machine (SPEC §5).

Stores call :func:`check` inside their compare-and-set loop: a transition is written only
if it is allowed from the stage the row holds *at the moment of writing*, so a late
writer can never overwrite a finished run.
"""

from __future__ import annotations

from nexus.core.models import TERMINAL_STAGES
from nexus.core.models import LifecycleStage as S
from nexus.errors import InvalidTransition

# BUFFERED may end directly in any terminal stage: the Job can be running (and report,
# or fail) before the scheduler has committed RUNNING. RUNNING goes back to BUFFERED only
# as a disruption (its process was lost with a crashed nexus, see core.supervision): the
# one way a run is launched again, and a compare-and-set like every other change, so of
# two writers that found it lost only one re-queues it.
ALLOWED: dict[S, frozenset[S]] = {
    S.NEW: frozenset({S.BUFFERED, S.SCHEDULING_FAILED, S.CANCELLED}),
    S.BUFFERED: frozenset({S.RUNNING}) | TERMINAL_STAGES,
    S.RUNNING: frozenset({S.BUFFERED}) | TERMINAL_STAGES,
    **{stage: frozenset() for stage in TERMINAL_STAGES},
}


def require_unfinished(stage: S) -> None:
    """For lookups by host and stage, which hold only runs that are not finished."""
    if stage in TERMINAL_STAGES:
        raise ValueError(f"runs are looked up by host only at unfinished stages, not {stage}")


def can_transition(current: S, target: S) -> bool:
    return target in ALLOWED[current]


def check(run_id: str, current: S, target: S, expected: S | None = None) -> None:
    """Raise InvalidTransition with a message that says why, or return. ``expected``,
    if given, is the only stage the change is made from (a writer that read the run at
    that stage must not act on a newer one)."""
    if expected is not None and current is not expected and current not in TERMINAL_STAGES:
        raise InvalidTransition(
            f"Run {run_id} is {current.value}, no longer {expected.value}; "
            f"it is not moved to {target.value}"
        )
    if can_transition(current, target):
        return
    if current in TERMINAL_STAGES:
        raise InvalidTransition(
            f"Run {run_id} already finished as {current.value}; it cannot become {target.value}"
        )
    raise InvalidTransition(f"Run {run_id} is {current.value}; it cannot become {target.value}")
