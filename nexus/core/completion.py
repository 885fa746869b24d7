"""Receiver use cases: an algorithm reports its result, or asks whether its run is done.

With ``auth.receiver-tokens`` both need the run's own token (core.signing.RunTokens),
checked after the names' syntax and before the store is read: a refused caller learns
nothing about the run, not even whether it exists, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run
from nexus.core.ports import RunStore
from nexus.core.scheduling import check_algorithm_name, check_request_id
from nexus.core.signing import RunTokens
from nexus.core.watch import RunWatch
from nexus.errors import InvalidTransition, NotFound


class Completion:
    def __init__(self, store: RunStore, watch: RunWatch, tokens: RunTokens | None = None) -> None:
        self.store = store
        self.watch = watch
        self.tokens = tokens  # None: receiver tokens off, anyone may report

    def _check(self, algorithm: str, run_id: str, token: str | None) -> None:
        check_algorithm_name(algorithm)
        check_request_id(run_id)
        if self.tokens is not None:
            self.tokens.verify(token, algorithm, run_id)

    async def _run(self, algorithm: str, run_id: str, token: str | None) -> Run:
        self._check(algorithm, run_id, token)
        run = await self.store.get(algorithm, run_id)
        if run is None:
            raise _not_found(algorithm, run_id)
        return run

    async def complete(
        self,
        algorithm: str,
        run_id: str,
        *,
        result_uri: str,
        error_cause: str = "",
        error_details: str = "",
        token: str | None = None,
    ) -> Run:
        """Record the outcome; a run that is already finished keeps its first result.

        The change is tried straight away, without reading the run first: the store's
        compare-and-set reads it anyway, and refuses a finished run before writing
        anything. One read per completion instead of two (issue 10's completion path)."""
        self._check(algorithm, run_id, token)
        target = S.FAILED if error_cause else S.COMPLETED
        fields: dict[str, Any] = {"result_uri": result_uri}
        if error_cause:
            fields["algorithm_failure_cause"] = error_cause
            fields["algorithm_failure_details"] = error_details
        try:
            updated = await self.store.transition(algorithm, run_id, target, **fields)
        except NotFound:
            raise _not_found(algorithm, run_id) from None
        except InvalidTransition:  # finished already (or not yet started): as it is
            return await self._run(algorithm, run_id, token)
        self.watch.notify(algorithm, run_id)
        return updated

    async def is_processed(self, algorithm: str, run_id: str, token: str | None = None) -> bool:
        return (await self._run(algorithm, run_id, token)).lifecycle_stage.is_terminal


def _not_found(algorithm: str, run_id: str) -> NotFound:
    return NotFound(f"checkpoint not found: {algorithm}/{run_id}")
