"""The one record of which runs this process is carrying through their launch.

It replaces four calls that were spread over the accept, the pipeline and recovery
(hold, release, submit, note-left-behind) with two: ``claim`` and ``release``.
"""

from __future__ import annotations


class InFlight:
    """Runs this process has claimed, and a count of the ones it let go while pending.

    **Invariant.** At every moment, each run of this host that is NEW or BUFFERED in the
    store is either claimed here, or was released with ``left_behind=True`` since its
    last claim (so ``left_behind`` moved, and the owner's sweep, which watches it, looks
    again). A run is claimed from before its accept's first write, or before recovery
    pushes it, until this process has moved it out of NEW/BUFFERED (RUNNING committed,
    failed, cancelled, found finished) or lets it go; while claimed it is in exactly one
    place: an accept writing it, the crate's queue (delayed retries included), a worker
    launching it, or its RUNNING commit.

    Consequences the callers rely on:

    - ``claim`` returns False for a run already claimed: nobody queues a run twice, and
      a sweep skips a run an accept is still writing (whose row may be NEW before its
      payload is stored) instead of closing it as lost.
    - While ``left_behind`` has not moved, every pending run of this host is claimed, so
      the sweep has nothing to find and may skip its O(queue) read.

    Every claim is ended by exactly one ``release``; releasing a run not claimed is a
    bug, reported as KeyError so that it cannot hide a broken invariant.
    """

    def __init__(self) -> None:
        self._runs: set[tuple[str, str]] = set()
        self.left_behind = 0

    def claim(self, algorithm: str, run_id: str) -> bool:
        """Take the run in hand; False (and nothing changes) if it is claimed already."""
        key = (algorithm, run_id)
        if key in self._runs:
            return False
        self._runs.add(key)
        return True

    def release(self, algorithm: str, run_id: str, *, left_behind: bool = False) -> None:
        """End the claim. ``left_behind=True`` when the run may still be NEW/BUFFERED in
        the store (a full lane, a store outage, an interrupted accept, a bug): the sweep
        must look again. KeyError if the run is not claimed."""
        self._runs.remove((algorithm, run_id))
        if left_behind:
            self.left_behind += 1

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._runs

    def __len__(self) -> int:
        return len(self._runs)
