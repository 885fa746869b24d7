"""core.callbacks: the callback URL policy, the signature, and the Notifier's attempts,
claims, backoff and giving up (in-memory store, virtual time, a scripted sender)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import msgspec
import pytest

from nexus.core.callbacks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackPolicy,
    Notifier,
    check_addresses,
    check_callback_url,
    parse_networks,
    signature,
)
from nexus.core.models import CallbackState
from nexus.core.models import LifecycleStage as S
from nexus.errors import BackendUnavailable, BadRequest
from tests.unit.fakes import MemoryStore, VirtualTime

SECRET = b"webhook-secret-for-tests"
URL = "https://hooks.example/done"


class ScriptedSender:
    """Answers each POST with the next of ``answers`` (a status, or an exception)."""

    def __init__(self, answers: list[int | Exception], dns: dict[str, list[str]] | None = None):
        self.answers = answers
        self.dns = dns or {"hooks.example": ["93.184.216.34"]}
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def addresses(self, host: str, port: int) -> list[str]:
        if host not in self.dns:
            raise BadRequest(f"callbackUrl host {host!r} does not resolve")
        return self.dns[host]

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.posts.append((url, body, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def finished_run(store: MemoryStore, stage: S = S.COMPLETED, url: str = URL) -> str:
    store.add("run-1", stage)
    run = store.run("run-1")
    store.runs[("algo", "run-1")] = msgspec.structs.replace(
        run, callback_url=url, result_uri="https://results.example/r", algorithm_failure_cause=""
    )
    return "run-1"


def notifier(
    store: MemoryStore, sender: ScriptedSender, clock: VirtualTime, **policy: float
) -> Notifier:
    return Notifier(
        store,
        sender,
        SECRET,
        CallbackPolicy(**policy),  # type: ignore[arg-type]
        [],
        now=clock.now,
    )


# --- the URL policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/x", "http:// or https://"),
        ("hooks.example/x", "http:// or https://"),
        ("https:///x", "no host"),
        ("https://user:pw@hooks.example/x", "credentials"),
        ("https://hooks.example/x#frag", "fragment"),
        ("https://hooks.example/a b", "spaces"),
        ("https://hooks.example:99999/x", "not a valid URL"),
        ("https://hooks.example/" + "a" * 3000, "longer than"),
        ("http://127.0.0.1:8080/x", "loopback, private or reserved"),
        ("http://[::1]/x", "loopback, private or reserved"),
        ("http://[::ffff:10.0.0.1]/x", "loopback, private or reserved"),
        ("http://169.254.169.254/latest/meta-data", "loopback, private or reserved"),
        ("http://192.168.1.10/x", "loopback, private or reserved"),
        ("http://inside.example/x", "loopback, private or reserved"),
        ("http://nowhere.example/x", "does not resolve"),
    ],
)
async def test_a_callback_url_that_may_not_be_called_is_refused(url, why):
    sender = ScriptedSender(
        [], dns={"hooks.example": ["93.184.216.34"], "inside.example": ["10.1.2.3"]}
    )
    with pytest.raises(BadRequest, match=why):
        await check_callback_url(url, sender, [])


async def test_public_addresses_and_allowed_networks_pass():
    sender = ScriptedSender(
        [], dns={"hooks.example": ["93.184.216.34"], "inside.example": ["10.1.2.3"]}
    )
    await check_callback_url("https://hooks.example/x", sender, [])
    await check_callback_url(
        "http://inside.example:8080/x", sender, parse_networks(["10.1.0.0/16"])
    )
    await check_callback_url("http://127.0.0.1:9/x", sender, parse_networks(["127.0.0.0/8"]))


def test_one_private_address_among_public_ones_is_refused():
    """A name may resolve to several addresses; the connection may use any of them."""
    with pytest.raises(BadRequest):
        check_addresses(URL, ["93.184.216.34", "10.0.0.5"], [])


def test_a_bad_network_setting_names_itself():
    with pytest.raises(ValueError, match="webhooks.allowed-networks"):
        parse_networks(["10.0.0.0/33"])


def test_the_signature_is_an_hmac_of_timestamp_and_body():
    expected = hmac.new(SECRET, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature(SECRET, "1700000000", b"{}") == f"sha256={expected}"


# --- the Notifier ------------------------------------------------------------------------


async def test_a_finished_run_is_posted_once_signed_and_then_done():
    store, clock = MemoryStore(), VirtualTime()
    run_id = finished_run(store)
    sender = ScriptedSender([204])
    hooks = notifier(store, sender, clock)
    assert await hooks.sweep() == 1
    url, body, headers = sender.posts[0]
    assert url == URL
    assert msgspec.json.decode(body) == {
        "requestId": run_id,
        "algorithmName": "algo",
        "status": "COMPLETED",
        "resultUri": "https://results.example/r",
        "runErrorMessage": "",
    }
    assert headers[SIGNATURE_HEADER] == signature(SECRET, headers[TIMESTAMP_HEADER], body)
    assert headers[DELIVERY_HEADER] == f"algo/{run_id}"
    run = store.run(run_id)
    assert run.callback_done_at is not None
    assert run.callback_state.delivered_at == clock.now() and run.callback_state.attempts == 1
    assert await hooks.sweep() == 0 and len(sender.posts) == 1  # done: never again


async def test_a_run_still_running_is_not_posted():
    store, clock = MemoryStore(), VirtualTime()
    finished_run(store, stage=S.RUNNING)
    sender = ScriptedSender([])
    assert await notifier(store, sender, clock).sweep() == 0
    assert sender.posts == []


async def test_failures_back_off_exponentially_then_it_gives_up():
    store, clock = MemoryStore(), VirtualTime()
    run_id = finished_run(store, stage=S.FAILED)
    sender = ScriptedSender([500, BackendUnavailable("ConnectError: refused"), 503])
    hooks = notifier(store, sender, clock, max_attempts=3, retry_base=2.0, retry_max=600.0)
    waits = []
    for _ in range(3):
        assert await hooks.sweep() == 1
        state = store.run(run_id).callback_state
        if state.next_at is not None:
            waits.append((state.next_at - clock.now()).total_seconds())
            clock.advance(waits[-1] - 0.001)
            assert await hooks.sweep() == 0  # not due yet
            clock.advance(0.001)
    assert waits == [2.0, 4.0]
    state = store.run(run_id).callback_state
    assert state.gave_up and state.attempts == 3 and state.last_status == 503
    assert store.run(run_id).callback_done_at is not None
    clock.advance(3600)
    assert await hooks.sweep() == 0 and len(sender.posts) == 3


async def test_an_attempt_claimed_elsewhere_is_not_made_again():
    """Two schedulers sweep the same store: only the claim's winner posts; a claim left by
    one killed mid-attempt expires and the attempt is made again."""
    store, clock = MemoryStore(), VirtualTime()
    run_id = finished_run(store)
    first, second = ScriptedSender([]), ScriptedSender([204])
    stale = store.run(run_id)
    # The first claims and "dies" before posting: its claim stays.
    claim = await notifier(store, first, clock).store.update_callback(
        "algo", run_id, None, _claim(clock)
    )
    assert claim is not None
    other = notifier(store, second, clock)
    assert await other.attempt(stale) is False  # read before the claim: loses the CAS
    assert await other.sweep() == 0  # the claim is not expired yet
    clock.advance(CallbackPolicy().claim_for)
    assert await other.sweep() == 1
    assert store.run(run_id).callback_state.delivered_at is not None
    assert store.run(run_id).callback_state.attempts == 2


def _claim(clock: VirtualTime) -> CallbackState:
    return CallbackState(
        attempts=1, next_at=clock.now() + timedelta(seconds=CallbackPolicy().claim_for)
    )


async def test_a_url_refused_at_delivery_counts_as_a_failed_attempt():
    """The name resolved to a public address at accept and to a private one now."""
    store, clock = MemoryStore(), VirtualTime()
    run_id = finished_run(store)
    sender = ScriptedSender([], dns={"hooks.example": ["10.0.0.7"]})
    assert await notifier(store, sender, clock).sweep() == 1
    assert sender.posts == []
    state = store.run(run_id).callback_state
    assert state.last_error.startswith("refused:") and not state.gave_up


async def test_the_store_down_leaves_the_webhook_for_the_next_sweep():
    store, clock = MemoryStore(), VirtualTime()
    run_id = finished_run(store)
    sender = ScriptedSender([204])
    hooks = notifier(store, sender, clock)
    store.unavailable = 1  # the sweep's read of the pending runs fails: nothing is lost
    with pytest.raises(BackendUnavailable):
        await hooks.sweep()
    assert sender.posts == [] and store.run(run_id).callback_state is None
    store.unavailable = 0
    assert await hooks.sweep() == 1
    assert store.run(run_id).callback_done_at is not None
