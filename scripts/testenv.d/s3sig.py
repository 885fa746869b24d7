#!/usr/bin/env python3
"""Tiny S3 client (standard library only, AWS Signature V4) used by
scripts/testenv.d/seaweedfs.sh to check that the S3 endpoint answers, to
create the test bucket, and to verify that the server checks signatures.

    s3sig.py ping            HEAD the bucket (signed); exit 0 if the server answered at all
    s3sig.py ensure-bucket   create the bucket if missing; exit 0 when it exists
    s3sig.py check-auth      unsigned and wrongly-signed requests must get 403,
                             a signed put/get/delete must work

Reads NEXUS_TEST_S3_ENDPOINT, NEXUS_TEST_S3_ACCESS_KEY_ID,
NEXUS_TEST_S3_SECRET_ACCESS_KEY, NEXUS_TEST_S3_BUCKET, NEXUS_TEST_S3_REGION.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import uuid


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"s3sig: {name} is not set")
    return value


class S3:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str,
        timeout: float = 5.0,
    ):
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme != "http":
            raise ValueError("only http:// endpoints are supported here")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.netloc = url.netloc
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.timeout = timeout

    def _signature_headers(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes,
        secret_key: str,
    ) -> dict[str, str]:
        now = datetime.datetime.now(datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {
            "host": self.netloc,
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": amz_date,
        }
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
            for k, v in sorted(query.items())
        )
        signed_headers = ";".join(sorted(headers))
        canonical_headers = "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers))
        canonical_request = "\n".join(
            [
                method,
                urllib.parse.quote(path, safe="/-_.~"),
                canonical_query,
                canonical_headers,
                signed_headers,
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )

        def _hmac(key: bytes, msg: str) -> bytes:
            return hmac.new(key, msg.encode(), hashlib.sha256).digest()

        key = _hmac(("AWS4" + secret_key).encode(), day)
        key = _hmac(key, self.region)
        key = _hmac(key, "s3")
        key = _hmac(key, "aws4_request")
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        query: dict[str, str] | None = None,
        sign: bool = True,
        secret_key: str | None = None,
    ) -> tuple[int, bytes]:
        query = query or {}
        if sign:
            headers = self._signature_headers(
                method, path, query, body, secret_key or self.secret_key
            )
        else:
            headers = {"host": self.netloc}
        target = urllib.parse.quote(path, safe="/-_.~")
        if query:
            target += "?" + urllib.parse.urlencode(
                sorted(query.items()), quote_via=urllib.parse.quote
            )
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in {"ping", "ensure-bucket", "check-auth"}:
        print(__doc__, file=sys.stderr)
        return 2
    s3 = S3(
        _env("NEXUS_TEST_S3_ENDPOINT"),
        _env("NEXUS_TEST_S3_ACCESS_KEY_ID"),
        _env("NEXUS_TEST_S3_SECRET_ACCESS_KEY"),
        _env("NEXUS_TEST_S3_REGION"),
    )
    bucket = _env("NEXUS_TEST_S3_BUCKET")
    cmd = argv[1]
    try:
        if cmd == "ping":
            status, _ = s3.request("HEAD", f"/{bucket}")
            # Any S3 answer (200, 404, ...) means the gateway is serving; 5xx
            # means it is up but not ready yet.
            return 0 if status < 500 else 1

        if cmd == "ensure-bucket":
            status, body = s3.request("HEAD", f"/{bucket}")
            if status == 200:
                return 0
            status, body = s3.request("PUT", f"/{bucket}")
            if status in (200, 409):  # 409: BucketAlreadyOwnedByYou / exists
                status2, _ = s3.request("HEAD", f"/{bucket}")
                if status2 == 200:
                    return 0
            print(
                f"s3sig: cannot create bucket {bucket}: HTTP {status} {body[:300]!r}",
                file=sys.stderr,
            )
            return 1

        # check-auth
        key = f"/{bucket}/testenv-auth-check-{uuid.uuid4().hex}"
        failures = []
        status, _ = s3.request("PUT", key, b"unsigned", sign=False)
        if status != 403:
            failures.append(f"unsigned PUT got HTTP {status}, expected 403")
        status, _ = s3.request("GET", f"/{bucket}", query={"list-type": "2"}, sign=False)
        if status != 403:
            failures.append(f"unsigned LIST got HTTP {status}, expected 403")
        status, _ = s3.request("PUT", key, b"bad", secret_key=s3.secret_key + "-wrong")
        if status != 403:
            failures.append(f"PUT signed with a wrong secret got HTTP {status}, expected 403")
        status, body = s3.request("PUT", key, b"hello")
        if status != 200:
            failures.append(f"signed PUT got HTTP {status}: {body[:200]!r}")
        status, body = s3.request("GET", key)
        if status != 200 or body != b"hello":
            failures.append(f"signed GET got HTTP {status}: {body[:200]!r}")
        status, _ = s3.request("GET", key, sign=False)
        if status != 403:
            failures.append(f"unsigned GET got HTTP {status}, expected 403")
        status, _ = s3.request("DELETE", key)
        if status not in (200, 204):
            failures.append(f"signed DELETE got HTTP {status}")
        for f in failures:
            print(f"s3sig: {f}", file=sys.stderr)
        return 1 if failures else 0
    except OSError as exc:
        if cmd != "ping":
            print(f"s3sig: {cmd}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
