"""A test algorithm whose behaviour the payload chooses, to drive every lifecycle path.

Payload keys (all optional): "sleep" seconds before acting; "exit" code to exit with
(without reporting); "fail_attempts" — exit 1 on the first N attempts (counted in a file
named by the request id under $BEHAVE_STATE); "transient_attempts" — exit 75 (a
transient code of the test templates) on the first N attempts; "report": false to exit 0
silently; "error": a cause to report as failure; otherwise report success with the payload
echoed. Each attempt also appends its pid to "<request id>.starts" and writes it to
"<request id>.pid" there, so tests can count launches and check a process was stopped.
"""

import argparse
import json
import os
import sys
import time
import urllib.request


def http(method, url, body=None):
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sas-uri", required=True)
    parser.add_argument("--request-id", required=True)
    args = parser.parse_args()
    payload = json.loads(http("GET", args.sas_uri))
    state_dir = os.environ.get("BEHAVE_STATE") or os.path.join(os.getcwd(), ".behave")
    os.makedirs(state_dir, exist_ok=True)
    counter = os.path.join(state_dir, args.request_id)
    # One line per start, appended: two processes of one run would both show up.
    with open(counter + ".starts", "a") as handle:
        handle.write(f"{os.getpid()}\n")
    with open(counter + ".starts") as handle:
        attempt = len(handle.read().splitlines())
    with open(counter, "w") as handle:
        handle.write(str(attempt))
    with open(counter + ".pid", "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(float(payload.get("sleep", 0)))
    if "exit" in payload:
        return int(payload["exit"])
    if attempt <= int(payload.get("transient_attempts", 0)):
        return 75
    if attempt <= int(payload.get("fail_attempts", 0)):
        return 1
    if payload.get("report") is False:
        return 0
    receiver = os.environ["NEXUS__CLIENT__RECEIVER"].rstrip("/")
    algorithm = os.environ["NEXUS__ALGORITHM_NAME"]
    url = f"{receiver}/algorithm/v1/complete/{algorithm}/requests/{args.request_id}"
    if "error" in payload:
        outcome = {"resultUri": "", "errorCause": payload["error"], "errorDetails": "details"}
    else:
        result = json.dumps({"echo": payload, "attempt": attempt}).encode()
        http("PUT", os.environ["NEXUS__RESULT_UPLOAD_URL"], result)
        outcome = {"resultUri": os.environ["NEXUS__RESULT_URL"]}
    http("POST", url, json.dumps(outcome).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
