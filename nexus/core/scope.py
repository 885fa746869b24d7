"""The shards one supervisor answers for (``supervisor.shards``).

One supervisor may look after every shard (the default, an empty list) or only some, so
that one can be deployed per shard as the Go system does. A supervisor must leave the
runs of other shards alone: their Jobs are not in its snapshot, so judging them would
mark them lost, and re-queueing a dead scheduler's runs of another shard would take work
from that shard's own supervisor.

A run with no recorded shard (one the Go system launched: its rows have no ``cluster``)
belongs to no shard in particular, so only a supervisor of every shard covers it; a
per-shard supervisor still acts on what it sees of such a run's Job on its own shard.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from nexus.errors import ConfigError

SETTING = "supervisor.shards"
_LISTED = 5  # unknown names quoted in the error; the rest are counted


def _quote(name: str, limit: int = 64) -> str:
    """``name`` quoted, escaped and cut short: a hostile one must not flood or forge logs."""
    return repr(name[:limit]) + ("..." if len(name) > limit else "")


class ShardScope:
    """Every shard when ``shards`` is empty, else exactly the ones it names."""

    def __init__(self, shards: Iterable[str] = ()) -> None:
        self.shards = frozenset(shards)

    @property
    def is_all(self) -> bool:
        return not self.shards

    def covers(self, cluster: str) -> bool:
        return self.is_all or cluster in self.shards

    def check(self, known: Collection[str]) -> None:
        """ConfigError naming the setting if it names a shard that is not configured: a
        typo would otherwise leave that shard's runs without any supervisor."""
        unknown = sorted(name for name in self.shards if name not in known)
        if unknown:
            listed = ", ".join(map(_quote, unknown[:_LISTED]))
            if len(unknown) > _LISTED:
                listed += f" and {len(unknown) - _LISTED} more"
            raise ConfigError(
                f"Invalid settings: {SETTING} names {listed}, "
                f"which {'is not a' if len(unknown) == 1 else 'are not'} configured "
                f"shard{'' if len(unknown) == 1 else 's'} (known: "
                f"{', '.join(sorted(known)) or 'none'}); leave it empty to supervise every shard"
            )

    def describe(self) -> str:
        return "every shard" if self.is_all else "shard(s) " + ", ".join(sorted(self.shards))
