"""Scheduler routes (SPEC §2): decode, call the Scheduler use case, encode."""

from __future__ import annotations

import codecs
import math
from typing import TypeVar
from urllib.parse import unquote

import msgspec
from sanic import Blueprint
from sanic.response import HTTPResponse, empty, raw, redirect

from nexus.api import schemas
from nexus.context import NexusRequest
from nexus.core.access import Verb
from nexus.core.units import format_duration
from nexus.errors import BadRequest

bp = Blueprint("runs", url_prefix="/algorithm/v1")

JSON = "application/json"


def json_response(body: object, status: int = 200) -> HTTPResponse:
    return raw(schemas.encoder.encode(body), status=status, content_type=JSON)


# JSON nested this deep always decodes. msgspec's limit is Python's recursion limit (1000)
# less the handler's own stack, so up to ~950 levels pass; deeper is a RecursionError.
JSON_DEPTH = 500

T = TypeVar("T")


def _decode(decoder: msgspec.json.Decoder[T], body: bytes, what: str) -> T:
    if not body:
        raise BadRequest(f"{what} is invalid: the request body is empty, expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} is invalid: {exc}") from None
    except RecursionError:
        raise BadRequest(
            f"{what} is invalid: the JSON nests objects and arrays too deeply "
            f"(keep it under {JSON_DEPTH} levels)"
        ) from None


_UTF8_CHUNK = 1 << 20


def _check_utf8(data: memoryview) -> None:
    """JSON is UTF-8 (RFC 8259). msgspec checks every string it decodes, but the payload
    is kept as Raw bytes and only skipped over, so its strings are checked here: in one
    pass when small (a 2 KB payload costs well under a microsecond), in 1 MiB pieces when
    large so a 500 MB payload is never copied whole."""
    try:
        if len(data) <= _UTF8_CHUNK:
            str(data, "utf-8")
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        for start in range(0, len(data), _UTF8_CHUNK):
            decoder.decode(data[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"Algorithm payload is invalid: algorithmParameters is not valid UTF-8 ({exc.reason})"
        ) from None


def _parameters(request_body: schemas.RunRequest) -> memoryview:
    params = memoryview(request_body.algorithm_parameters)
    first = bytes(params[:64]).lstrip()[:1]
    if first != b"{":
        raise BadRequest("Algorithm payload is invalid: algorithmParameters must be a JSON object")
    _check_utf8(params)
    return params


async def allow(request: NexusRequest, verb: Verb, algorithm: str) -> str | None:
    """401/403 unless the caller may ``verb`` runs of ``algorithm`` (``auth.mode``);
    checked before the body is read, so a refused caller learns nothing else. The
    caller's name, None when nobody is checked (mode none)."""
    access = request.app.ctx.access
    if not access.enforced:
        return None
    principal = await access.check(request.headers.get("authorization"), verb, algorithm)
    return principal.user


@bp.post("/run/<algorithm:str>")
async def create_run(request: NexusRequest, algorithm: str) -> HTTPResponse:
    caller = await allow(request, Verb.CREATE, algorithm)
    body = _decode(schemas.run_request_decoder, request.body, "Algorithm payload")
    run_id = await request.app.ctx.scheduler.accept(
        algorithm,
        _parameters(body),
        custom=body.custom_configuration,
        api_version=body.request_api_version or "",
        tag=body.tag or "",
        parent=body.parent_request,
        payload_valid_for=body.payload_valid_for,
        dry_run=request.args.get("dryRun") == "true",
        idempotency_key=request.headers.get("idempotency-key") or None,
        callback_url=body.callback_url or "",
        caller=caller,
    )
    request.app.ctx.metrics.accepted.inc(algorithm)
    return json_response(schemas.RunCreated(request_id=run_id), status=202)


@bp.post("/resubmit/<algorithm:str>/requests/<request_id:str>")
async def resubmit_run(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    caller = await allow(request, Verb.CREATE, algorithm)
    body = (
        _decode(schemas.resubmit_decoder, request.body, "Resubmit request")
        if request.body
        else schemas.ResubmitRequest()
    )
    run_id = await request.app.ctx.scheduler.resubmit(
        algorithm, request_id, custom=body.custom_configuration, tag=body.tag, caller=caller
    )
    request.app.ctx.metrics.accepted.inc(algorithm)
    return json_response(schemas.RunCreated(request_id=run_id), status=202)


def _wait_seconds(request: NexusRequest) -> float:
    """``?wait=``: a finite number of seconds >= 0; longer than max-wait waits max-wait."""
    text = request.args.get("wait")
    if text is None:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = math.nan
    if not 0 <= wait < math.inf:
        limit = format_duration(request.app.ctx.settings.max_wait)
        raise BadRequest(
            f"Invalid wait={text[:40]!r}: expected a finite number of seconds "
            f">= 0 (a wait longer than max-wait, {limit}, is cut to it)"
        )
    return wait


@bp.get("/results/<algorithm:str>/requests/<request_id:str>")
async def get_result(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.GET, algorithm)
    scheduler = request.app.ctx.scheduler
    wait = _wait_seconds(request)
    run = await (
        scheduler.wait_result(algorithm, request_id, wait)
        if wait
        else scheduler.get(algorithm, request_id)
    )
    return json_response(schemas.request_result(run))


def _route_tag(raw: str) -> str:
    """The tag of ``results/tags/{tag}``, percent-decoded (Sanic leaves route parameters
    as sent): clients encode spaces, '/', '?', '#', '%' and non-ASCII text."""
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(
            f"Invalid tag {raw[:80]!r}: once percent-decoded it is not UTF-8 "
            "text; percent-encode the tag's UTF-8 bytes"
        ) from None


@bp.get("/results/tags/<tag:str>")
async def get_results_by_tag(request: NexusRequest, tag: str) -> HTTPResponse:
    found = _route_tag(tag)
    runs = await request.app.ctx.access.readable(
        request.headers.get("authorization"), lambda: request.app.ctx.scheduler.by_tag(found)
    )
    return json_response([schemas.tagged_result(run) for run in runs])


@bp.get("/metadata/<algorithm:str>/requests/<request_id:str>")
async def get_metadata(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.GET, algorithm)
    run = await request.app.ctx.scheduler.get(algorithm, request_id)
    return json_response(schemas.checkpoint(run))


@bp.get("/buffer/<algorithm:str>/requests/<request_id:str>")
async def get_buffered(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    # The Job's JSON, labelled text/plain as the Go server sends it: the Go SDK's
    # GetBufferedRequest accepts no other content type.
    await allow(request, Verb.GET, algorithm)
    job = await request.app.ctx.scheduler.submission(algorithm, request_id)
    return raw(schemas.encoder.encode(job), content_type="text/plain; charset=utf-8")


@bp.get("/payload/<algorithm:str>/requests/<request_id:str>")
async def get_payload(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.GET, algorithm)
    return redirect(await request.app.ctx.scheduler.payload_uri(algorithm, request_id), status=302)


@bp.post("/cancel/<algorithm:str>/requests/<request_id:str>")
async def cancel_run(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.DELETE, algorithm)
    body = _decode(schemas.cancel_decoder, request.body, "Cancellation payload")
    await request.app.ctx.scheduler.cancel(
        algorithm,
        request_id,
        reason=body.reason or "",
        initiator=body.initiator or "",
        policy=body.cancellation_policy or "Background",
    )
    return empty(status=200, headers={"content-type": "text/plain; charset=utf-8"})


@bp.post("/metadata/tags/<algorithm:str>/requests/<request_id:str>")
async def update_tag(request: NexusRequest, algorithm: str, request_id: str) -> HTTPResponse:
    await allow(request, Verb.UPDATE, algorithm)
    body = _decode(schemas.tag_update_decoder, request.body, "Tag update request")
    await request.app.ctx.scheduler.update_tag(algorithm, request_id, body.new_tag)
    return json_response({})
