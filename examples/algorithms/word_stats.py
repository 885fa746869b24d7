"""An example nexus algorithm: word statistics of a text.

Written the way a data scientist writes one: read the payload from the URL nexus passes
in ``--sas-uri``, compute, upload the result to the URL nexus provides, and tell the
receiver where it is — or why it failed. Only the standard library is used.

Payload: {"text": "...", "top": 3 (optional)}
Result:  {"words": <count>, "distinct": <count>, "top": [[word, count], ...]}
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import traceback
import urllib.request


def compute(payload: dict) -> dict:
    text = payload["text"]
    if not isinstance(text, str):
        raise TypeError("payload field 'text' must be a string")
    top = int(payload.get("top", os.environ.get("WORD_STATS_TOP", 5)))
    words = re.findall(r"[\w']+", text.lower())
    counts = collections.Counter(words)
    return {"words": len(words), "distinct": len(counts), "top": counts.most_common(top)}


def http(method: str, url: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def report(request_id: str, outcome: dict) -> None:
    receiver = os.environ["NEXUS__CLIENT__RECEIVER"].rstrip("/")
    algorithm = os.environ["NEXUS__ALGORITHM_NAME"]
    url = f"{receiver}/algorithm/v1/complete/{algorithm}/requests/{request_id}"
    http("POST", url, json.dumps(outcome).encode())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sas-uri", required=True)
    parser.add_argument("--request-id", required=True)
    args = parser.parse_args()
    try:
        payload = json.loads(http("GET", args.sas_uri))
        result = compute(payload)
    except (KeyError, TypeError, ValueError) as exc:
        report(
            args.request_id,
            {
                "resultUri": "",
                "errorCause": f"{type(exc).__name__}: {exc}",
                "errorDetails": traceback.format_exc(),
            },
        )
        return 0
    http("PUT", os.environ["NEXUS__RESULT_UPLOAD_URL"], json.dumps(result).encode())
    report(args.request_id, {"resultUri": os.environ["NEXUS__RESULT_URL"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
