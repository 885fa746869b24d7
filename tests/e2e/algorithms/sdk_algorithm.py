"""An algorithm process that reports through the official Python SDK (nexus-client-sdk).

Run by the SDK's own interpreter (testenv component ``sdk``), never by nexus's venv. It
reads its payload from ``--sas-uri`` and uploads ``{"echo": payload}`` to the result URL
nexus signed for the run (``NEXUS__RESULT_UPLOAD_URL``; the SDK's stock bootstrap saves
the result with an adapta storage client, S3 or Azure, and reports that client's
presigned URL: on embedded defaults nexus's own signed URL stands for it). Then it
reports the way the stock bootstrap reports (``Nexus._submit_result``):
``NexusReceiverAsyncClient.complete_run`` with ``SdkCompletedRunResult.create(result_uri=...)``,
which sends the report through the Go SDK and then polls the receiver's check route until
the run is processed. Its ``token_provider`` gives the run's token from
``NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN``, as docs/auth.md tells an algorithm to.

Payload key "refused": "none" or "other" first makes one report the wrong way: with no
token provider (the stock bootstrap's client), or with a provider that gives
"other_token" (another run's token). Around it the process waits on files in
``$SDK_ALGORITHM_STATE`` so the test can look at the run before and after:
``<id>.ready`` (written) -> ``<id>.try`` (by the test) -> the wrong report ->
``<id>.refused`` (written: the exception's class and text, or "accepted") -> ``<id>.go``
(by the test) -> the right report. ``<id>.reported`` says how the right report went.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from datetime import datetime

from adapta.logs import SemanticLogger
from adapta.logs.models import LogLevel
from nexus_client_sdk.models.access_token import AccessToken
from nexus_client_sdk.models.receiver import SdkCompletedRunResult
from nexus_client_sdk.nexus.async_extensions.nexus_receiver_async_client import (
    NexusReceiverAsyncClient,
)

TOKEN_VARIABLE = "NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN"
WAIT_SECONDS = 120.0


def provider(value):
    """A token provider as the SDK's clients take it."""
    return lambda: AccessToken(value=value, valid_until=datetime(2999, 1, 1))


def write(path, text):
    with open(path + ".part", "w") as handle:
        handle.write(text)
    os.replace(path + ".part", path)  # seen whole or not at all


def wait_for(path):
    give_up = time.monotonic() + WAIT_SECONDS
    while not os.path.exists(path):
        if time.monotonic() > give_up:
            sys.exit(f"nobody wrote {path} in {WAIT_SECONDS}s")
        time.sleep(0.05)


async def report(token_provider, algorithm, request_id, result_uri):
    logger = SemanticLogger().add_log_source(
        log_source_name="sdk-algorithm", min_log_level=LogLevel.INFO, is_default=True
    )
    client = NexusReceiverAsyncClient(
        url=os.environ["NEXUS__CLIENT__RECEIVER"], logger=logger, token_provider=token_provider
    )
    await client.complete_run(
        result=SdkCompletedRunResult.create(result_uri=result_uri, error=None),
        algorithm=algorithm,
        request_id=request_id,
    )


def outcome(token_provider, algorithm, request_id, result_uri):
    """What one report through the SDK came to: "accepted", or the exception it raised."""
    try:
        asyncio.run(report(token_provider, algorithm, request_id, result_uri))
    except BaseException as exc:  # the SDK's errors are RuntimeError and BaseException kinds
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    return "accepted"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sas-uri", required=True)
    parser.add_argument("--request-id", required=True)
    args = parser.parse_args()
    with urllib.request.urlopen(args.sas_uri, timeout=30) as response:
        payload = json.loads(response.read())
    state = os.path.join(os.environ["SDK_ALGORITHM_STATE"], args.request_id)
    algorithm = os.environ["NEXUS__ALGORITHM_NAME"]
    upload = urllib.request.Request(
        os.environ["NEXUS__RESULT_UPLOAD_URL"],
        data=json.dumps({"echo": payload}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(upload, timeout=30).close()
    result_uri = os.environ["NEXUS__RESULT_URL"]
    wrong = payload.get("refused")
    if wrong:
        write(state + ".ready", "")
        wait_for(state + ".try")
        token_provider = None if wrong == "none" else provider(payload["other_token"])
        write(state + ".refused", outcome(token_provider, algorithm, args.request_id, result_uri))
        wait_for(state + ".go")
    own = provider(os.environ[TOKEN_VARIABLE])
    answer = outcome(own, algorithm, args.request_id, result_uri)
    write(state + ".reported", answer)
    return 0 if answer == "accepted" else 1


if __name__ == "__main__":
    sys.exit(main())
