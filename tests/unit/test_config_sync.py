"""The controller's pure decisions (nexus.core.config_sync) and its work queue."""

from __future__ import annotations

import asyncio

import pytest

from nexus.app import create_app
from nexus.core import config_sync as cs
from nexus.core.config_sync import Action
from nexus.core.leadership import Leadership
from nexus.core.workqueue import Key, QueueLimits, WorkQueue
from nexus.errors import ConfigError, SyncFailed
from nexus.settings import check_controller, load_settings

ALIAS = "ctl"


def _secret(name: str = "db", uid: str = "src-uid", **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "uid": uid, "labels": {"team": "a"}, "resourceVersion": "1"},
        "type": "Opaque",
        "data": data or {"password": "c2VjcmV0"},
    }


TEMPLATE = {
    "kind": cs.TEMPLATE,
    "metadata": {"name": "algo", "uid": "tpl-uid"},
    "spec": {"command": "x"},
}
OWNER = cs.owner_reference({"metadata": {"name": "algo", "uid": "shard-tpl-uid"}})


def _want(source: dict) -> dict:
    return cs.desired("Secret", source, alias=ALIAS, owner_name="algo", namespace="ns", owner=OWNER)


def test_references_finds_env_values_env_from_and_file_mounts():
    spec = {
        "runtimeEnvironment": {
            "environmentVariables": [
                {"name": "A", "value": "plain"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}},
                {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "mappedEnvironmentVariables": [
                {"secretRef": {"name": "s2"}},
                {"configMapRef": {"name": "c2"}},
                {"secretRef": {"name": "s1"}},
            ],
            "secretFileMounts": {"s3": {"name": "v", "mountPath": "/s"}},
            "configurationFileMounts": {"c3": {"name": "w", "mountPath": "/c"}},
        }
    }
    assert cs.references(spec) == (["s1", "s2", "s3"], ["c1", "c2", "c3"])
    assert cs.references({}) == ([], [])
    # Hostile shapes (not the CRD's, but a dict is all core sees) name nothing.
    odd = {"runtimeEnvironment": {"environmentVariables": ["x", {"valueFrom": 3}]}}
    assert cs.references(odd) == ([], [])


def test_a_missing_object_is_created_with_our_labels_and_owner():
    change = cs.plan(_want(_secret()), None, alias=ALIAS, source_uid="src-uid")
    assert change.action is Action.CREATE
    assert change.body is not None
    meta = change.body["metadata"]
    assert meta["labels"] == {"team": "a", cs.APP_LABEL: ALIAS, cs.OWNER_LABEL: "algo"}
    assert meta["ownerReferences"] == [OWNER] and meta["namespace"] == "ns"
    assert "uid" not in meta and "resourceVersion" not in meta
    assert change.body["data"] == {"password": "c2VjcmV0"}


def test_an_object_in_step_is_kept_and_a_drifted_one_updated():
    want = _want(_secret())
    current = {**want, "metadata": {**want["metadata"], "uid": "u2", "resourceVersion": "7"}}
    assert cs.plan(want, current, alias=ALIAS, source_uid="src-uid").action is Action.KEEP
    edited = {**current, "data": {"password": "ZWRpdGVk"}}
    change = cs.plan(want, edited, alias=ALIAS, source_uid="src-uid")
    assert change.action is Action.UPDATE and change.body is not None
    assert change.body["data"] == want["data"]
    assert change.body["metadata"]["resourceVersion"] == "7"


def test_an_object_that_is_not_ours_is_refused():
    want = _want(_secret())
    foreign = {"kind": "Secret", "metadata": {"name": "db", "uid": "u3"}, "data": {}}
    assert cs.plan(want, foreign, alias=ALIAS, source_uid="src-uid").action is Action.REFUSE
    other = {
        "kind": "Secret",
        "metadata": {"name": "db", "uid": "u3", "labels": {cs.APP_LABEL: "x"}},
    }
    assert cs.plan(want, other, alias=ALIAS, source_uid="src-uid").action is Action.REFUSE


def test_the_source_itself_is_left_alone():
    # A shard that is the controller cluster holds the source under the same name.
    source = _secret()
    assert cs.plan(_want(source), source, alias=ALIAS, source_uid="src-uid").action is Action.SOURCE


def test_a_shared_secret_gains_an_owner_and_keeps_its_first_owner_label():
    want = _want(_secret())
    first = cs.owner_reference({"metadata": {"name": "first", "uid": "first-uid"}})
    labels = {**want["metadata"]["labels"], cs.OWNER_LABEL: "first"}
    current = {
        **want,
        "metadata": {**want["metadata"], "labels": labels, "uid": "u", "ownerReferences": [first]},
    }
    change = cs.plan(want, current, alias=ALIAS, source_uid="src-uid")
    assert change.action is Action.UPDATE and change.body is not None
    assert change.body["metadata"]["ownerReferences"] == [first, OWNER]
    assert change.body["metadata"]["labels"][cs.OWNER_LABEL] == "first"
    updated = {**change.body, "metadata": {**change.body["metadata"], "uid": "u"}}
    assert cs.plan(want, updated, alias=ALIAS, source_uid="src-uid").action is Action.KEEP


def test_adoption_adds_the_template_once():
    owners = cs.adoption(_secret(), TEMPLATE)
    assert owners == [cs.owner_reference(TEMPLATE)]
    adopted = _secret()
    adopted["metadata"]["ownerReferences"] = owners
    assert cs.adoption(adopted, TEMPLATE) is None


def test_ready_keeps_its_transition_time_while_unchanged():
    first = cs.with_ready(None, False, "SyncError", "down", "T1")
    again = cs.with_ready(first, False, "SyncError", "still down", "T2")
    assert again["conditions"][0]["lastTransitionTime"] == "T1"
    ready = cs.with_ready(again, True, "Synced", "ok", "T3")
    assert ready["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "ok",
        "lastTransitionTime": "T3",
    }


# --- the work queue ---------------------------------------------------------------------


def _limits(**kw) -> QueueLimits:
    return QueueLimits(
        rate=kw.get("rate", 1000.0),
        burst=kw.get("burst", 100),
        base_delay=0.01,
        max_delay=0.05,
        workers=kw.get("workers", 2),
    )


async def _until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_failing_key_is_retried_while_others_go_through():
    calls: dict[Key, int] = {}

    async def handle(key: Key) -> None:
        calls[key] = calls.get(key, 0) + 1
        if key[1] == "bad" and calls[key] < 4:
            raise SyncFailed("shard down")

    queue = WorkQueue(handle, _limits())
    queue.start()
    try:
        queue.add(("T", "bad"))
        queue.add(("T", "good"))
        await _until(lambda: calls.get(("T", "bad"), 0) >= 4)
        assert calls[("T", "good")] == 1
        await _until(lambda: queue.depth() == 0)
    finally:
        await queue.stop()


async def test_a_burst_of_adds_is_one_sync_and_a_key_never_runs_twice_at_once():
    running: set[Key] = set()
    overlaps = []
    calls = []
    release = asyncio.Event()

    async def handle(key: Key) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        calls.append(key)
        await release.wait()
        running.discard(key)

    queue = WorkQueue(handle, _limits(workers=4))
    for _ in range(50):
        queue.add(("T", "a"))
    assert queue.depth() == 1
    queue.start()
    try:
        await _until(lambda: len(calls) == 1)
        for _ in range(10):  # while it runs: it is synced once more afterwards
            queue.add(("T", "a"))
        release.set()
        await _until(lambda: len(calls) == 2 and queue.depth() == 0)
        assert overlaps == []
    finally:
        await queue.stop()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKERS", "0"),
        ("RATE_LIMIT_ELEMENTS_PER_SECOND", "0"),
        ("RATE_LIMIT_ELEMENTS_BURST", "0"),
        ("FAILURE_RATE_BASE_DELAY", "10m"),  # longer than the max delay
        ("RESYNC_INTERVAL", "0s"),
        ("REQUEST_TIMEOUT", "-1s"),
        ("WORKERS", "many"),
    ],
)
def test_bad_controller_settings_are_refused_with_their_name(name, value):
    if value == "many":  # not a number: refused at load, whichever role reads the file
        with pytest.raises(ConfigError, match="controller.workers"):
            load_settings(None, {f"NEXUS__CONTROLLER__{name}": value})
        return
    with pytest.raises(ConfigError) as refused:
        check_controller(load_settings(None, {f"NEXUS__CONTROLLER__{name}": value}).controller)
    assert name.lower().replace("_", "-") in refused.value.message.lower()


@pytest.mark.parametrize("alias", ["", "Upper", "-dash", "dash-", "a" * 41, "dot.ted", "x y"])
def test_an_alias_that_cannot_name_a_lease_is_refused(alias):
    with pytest.raises(ConfigError, match="controller.alias"):
        check_controller(load_settings(None, {"NEXUS__CONTROLLER__ALIAS": alias or " "}).controller)


# --- leadership -------------------------------------------------------------------------


class _Lease:
    """Answers from a script: True/False, or an exception to raise."""

    def __init__(self, answers: list) -> None:
        self.answers = answers

    async def acquire_or_renew(self) -> bool:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)


async def test_work_starts_with_the_lease_and_stops_without_it():
    log: list[str] = []

    async def lead() -> None:
        log.append("lead")

    async def follow() -> None:
        log.append("follow")

    lease = _Lease([False, True, True, False, True, SyncFailed("down"), SyncFailed("down")])
    leadership = Leadership(lease, 30.0, on_lead=lead, on_follow=follow)
    for _ in range(5):
        await leadership.step()
    assert log == ["lead", "follow", "lead"]
    # One failed renewal right after a renewal keeps the lead (well within the deadline)...
    await leadership.step()
    assert leadership.leading and log == ["lead", "follow", "lead"]
    # ...but not once the renew deadline has passed.
    leadership._renewed -= 30.0
    await leadership.step()
    assert not leadership.leading and log[-1] == "follow"


def test_a_go_receiver_file_with_odd_queue_keys_still_loads():
    """The receiver's Go keys are read as controller.*; values the controller refuses
    do not stop the receiver (only --role controller checks them)."""
    environ = {"NEXUS__WORKERS": "0", "NEXUS__FAILURE_RATE_BASE_DELAY": "10m"}
    settings = load_settings(None, environ)
    with pytest.raises(ConfigError, match="controller.workers"):
        check_controller(settings.controller)


def test_only_the_controller_role_refuses_them_and_before_it_opens_anything():
    settings = load_settings(None, {"NEXUS__CONTROLLER__WORKERS": "0"})
    with pytest.raises(ConfigError, match="controller.workers"):
        create_app(settings, "controller", name="controller-bad-settings")
    assert create_app(settings, "receiver", name="receiver-odd-go-keys").ctx.role == "receiver"
