"""A test algorithm whose behaviour the payload chooses, to drive every lifecycle path.

Payload keys (all optional): "sleep" seconds before acting; "exit" code to exit with
(without reporting); "fail_attempts" — exit 1 on the first N attempts (counted in a file
named by the request id under $BEHAVE_STATE); "transient_attempts" — exit 75 (a
transient code of the test templates) on the first N attempts; "report": false to exit 0
silently; "error": a cause to report as failure; otherwise report success with the payload
echoed. "say": lines to print first (stdout, then "err: ..." on stderr), for the log
tail. "check": true then asks the receiver whether the run is processed, as the
official SDK does after its report, and writes the answer (or the HTTP error's status)
to "<request id>.checked" in the state folder. Reports and checks carry the
run's token from $NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN as ``Authorization: Bearer``, the
way the SDK's receiver client sends the token its token provider gives it (docs/auth.md).
Each attempt also appends "<pid> <unix time>" to "<request id>.starts" and writes
its pid to "<request id>.pid" there, so tests can count and time launches and check a
process was stopped.

The final report is retried while the receiver answers 503 or 429, honouring
Retry-After, as an algorithm reporting through nexus's own client would: a receiver whose
store is briefly away asks to be called again. It is given up after "report_patience"
seconds (payload key, default 20). The payload download and the report are also retried
while nexus does not answer at all (it is being restarted; on embedded defaults it is
both payload server and receiver), for "--patience" seconds (default 0: not at all).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def http(method, url, body=None):
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("NEXUS__CLIENT__RECEIVER_ACCESS_TOKEN")
    if token and "/algorithm/v1/" in url:  # the receiver's routes, not the signed URLs
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def patiently(method, url, body=None, patience=0.0):
    """``http``, retried while nobody listens at ``url``'s port, for ``patience`` seconds."""
    give_up = time.monotonic() + patience
    while True:
        try:
            return http(method, url, body)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > give_up:
                raise
            time.sleep(0.2)


def report(url, body, patience, down_patience):
    give_up = time.monotonic() + patience
    while True:
        try:
            return patiently("POST", url, body, down_patience)
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or time.monotonic() > give_up:
                raise
            delay = exc.headers.get("Retry-After", "1")
            time.sleep(min(float(delay) if delay.isdigit() else 1.0, 2.0))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sas-uri", required=True)
    parser.add_argument("--request-id", required=True)
    parser.add_argument("--patience", type=float, default=0.0)
    args = parser.parse_args()
    payload = json.loads(patiently("GET", args.sas_uri, patience=args.patience))
    state_dir = os.environ.get("BEHAVE_STATE") or os.path.join(os.getcwd(), ".behave")
    os.makedirs(state_dir, exist_ok=True)
    counter = os.path.join(state_dir, args.request_id)
    # One line per start, appended: two processes of one run would both show up.
    with open(counter + ".starts", "a") as handle:
        handle.write(f"{os.getpid()} {time.time():.3f}\n")
    with open(counter + ".starts") as handle:
        attempt = len(handle.read().splitlines())
    with open(counter, "w") as handle:
        handle.write(str(attempt))
    with open(counter + ".pid", "w") as handle:
        handle.write(str(os.getpid()))
    for line in payload.get("say", []):
        print(line, flush=True)
        print(f"err: {line}", file=sys.stderr, flush=True)
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
        patiently("PUT", os.environ["NEXUS__RESULT_UPLOAD_URL"], result, args.patience)
        outcome = {"resultUri": os.environ["NEXUS__RESULT_URL"]}
    report(
        url, json.dumps(outcome).encode(), float(payload.get("report_patience", 20)), args.patience
    )
    if payload.get("check"):
        check = f"{receiver}/algorithm/v1/check/{algorithm}/requests/{args.request_id}"
        try:
            answer = str(json.loads(http("GET", check))["is_processed"])
        except urllib.error.HTTPError as exc:
            answer = str(exc.code)
        with open(counter + ".checking", "w") as handle:
            handle.write(answer)
        os.replace(counter + ".checking", counter + ".checked")  # seen whole or not at all
    return 0


if __name__ == "__main__":
    sys.exit(main())
