"""A caller of the run API through the official Python SDK's scheduler client.

Run by the SDK's own interpreter (testenv component ``sdk``). Creates one run of
``--algorithm`` with ``--payload`` (JSON) and ``--tag`` through
``NexusSchedulerClient.create_run``, waits for it with ``await_run``, reads it again with
``get_run_result``, ``get_request_metadata`` and ``get_run_results(tag)``, downloads the
result from the URI the SDK returned, and prints one JSON object of what it saw.
"""

import argparse
import json
import sys
import urllib.request

from adapta.logs import SemanticLogger
from adapta.logs.models import LogLevel
from nexus_client_sdk.clients.nexus_scheduler_client import NexusSchedulerClient


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--payload", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--timeout", type=int, default=120)
    args = parser.parse_args()
    logger = SemanticLogger().add_log_source(
        log_source_name="sdk-caller", min_log_level=LogLevel.INFO, is_default=True
    )
    client = NexusSchedulerClient(url=args.url, logger=logger)
    request_id = client.create_run(json.loads(args.payload), args.algorithm, tag=args.tag)
    awaited = client.await_run(
        request_id, args.algorithm, poll_interval_seconds=1, wait_timeout_seconds=args.timeout
    )
    again = client.get_run_result(request_id, args.algorithm)
    meta = client.get_request_metadata(request_id, args.algorithm)
    tagged = list(client.get_run_results(args.tag, args.algorithm))
    with urllib.request.urlopen(awaited.result_uri, timeout=30) as response:
        downloaded = json.loads(response.read())
    seen = {
        "request_id": request_id,
        "awaited": {"status": awaited.status, "result_uri": awaited.result_uri},
        "finished": client.is_finished(awaited),
        "succeeded": client.has_succeeded(awaited),
        "again": {"status": again.status, "result_uri": again.result_uri},
        "metadata": {
            "id": meta.id,
            "lifecycle_stage": meta.lifecycle_stage,
            "tag": meta.tag,
            "result_uri": meta.result_uri,
        },
        "tagged": [result.request_id for result in tagged],
        "result": downloaded,
    }
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
