"""Embedded payload buffer: a local folder, with URLs signed and served by the scheduler.

The signed URLs point at the scheduler's own ``/data/v1/payloads`` and
``/data/v1/results`` routes, which verify the signature before touching the folder.
A write returns only once it is on stable storage (:mod:`group_sync`): the 202 promises
a durable payload, and LocalStore alone does not flush.
"""

from __future__ import annotations

from pathlib import Path

from obstore.store import LocalStore

from nexus.backends.buffer.group_sync import GroupSync
from nexus.backends.buffer.objects import ObjectPayloadBuffer, ObjectRef
from nexus.core.signing import UrlSigner

PAYLOAD_ROUTE = "/data/v1/payloads/{algorithm}/requests/{run_id}"
RESULT_ROUTE = "/data/v1/results/{algorithm}/requests/{run_id}"


def local_buffer(folder: str | Path, signer: UrlSigner) -> ObjectPayloadBuffer:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)

    def urls(method: str, ref: ObjectRef, valid_for: float) -> str:
        route = PAYLOAD_ROUTE if ref.kind == "payload" else RESULT_ROUTE
        return signer.sign(
            method, route.format(algorithm=ref.algorithm, run_id=ref.run_id), valid_for
        )

    syncer = GroupSync(root)
    return ObjectPayloadBuffer(
        LocalStore(root.resolve(), mkdir=True),
        "",
        urls,
        describe=f"local folder {root}",
        durable=syncer.sync,
        on_open=syncer.open,
        on_close=syncer.close,
    )
