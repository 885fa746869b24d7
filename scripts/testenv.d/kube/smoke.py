"""End-to-end check of the test control plane started by `scripts/testenv up kube`.

Runs real batch/v1 Jobs through the Job controller, the scheduler and KWOK and
checks each pod outcome that kube/kwok.yaml offers. Needs the `kubernetes`
client (the project's .venv has it) and NEXUS_TEST_KUBECONFIG.

    eval "$(scripts/testenv env kube)"
    .venv/bin/python scripts/testenv.d/kube/smoke.py [-k NAME]

Prints one line per check and a closing "N passed, N failed" line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from kubernetes import client, config


def job_body(name, annotations=None, restart="Never", **spec):
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations or {}),
                spec=client.V1PodSpec(
                    restart_policy=restart,
                    containers=[
                        client.V1Container(
                            name="main", image="example.invalid/nexus-worker:1", command=["run"]
                        )
                    ],
                ),
            ),
            **spec,
        ),
    )


class Smoke:
    def __init__(self, ns):
        self.ns = ns
        self.core = client.CoreV1Api()
        self.batch = client.BatchV1Api()

    def wait_job(self, name, timeout=60):
        """Wait until the Job has a Complete or Failed condition; return (type, reason, seconds)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            job = self.batch.read_namespaced_job_status(name, self.ns)
            for c in job.status.conditions or []:
                if c.type in ("Complete", "Failed") and c.status == "True":
                    return c.type, c.reason, round(time.monotonic() - t0, 1)
            time.sleep(0.2)
        raise AssertionError(f"job {name} did not finish in {timeout}s: {job.status}")

    def pods(self, job):
        return self.core.list_namespaced_pod(self.ns, label_selector=f"job-name={job}").items

    def wait_pod(self, job, pred, what, timeout=30):
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            for p in self.pods(job):
                last = p
                if pred(p):
                    return p
            time.sleep(0.2)
        raise AssertionError(
            f"no pod of {job} became {what} in {timeout}s; last: {last and last.status}"
        )

    # ---- checks

    def check_complete(self):
        self.batch.create_namespaced_job(self.ns, job_body("ok", backoff_limit=0))
        kind, reason, secs = self.wait_job("ok")
        assert kind == "Complete", (kind, reason)
        (pod,) = self.pods("ok")
        assert pod.spec.node_name and pod.spec.node_name.startswith("kwok-node-"), (
            pod.spec.node_name
        )
        assert pod.status.phase == "Succeeded", pod.status.phase
        term = pod.status.container_statuses[0].state.terminated
        assert term.exit_code == 0 and term.reason == "Completed", term
        return f"Complete in {secs}s on {pod.spec.node_name}"

    def check_exit_code_pod_failure_policy(self):
        body = job_body(
            "exit42",
            {"nexus.test/exit-code": "42"},
            backoff_limit=6,
            pod_failure_policy=client.V1PodFailurePolicy(
                rules=[
                    client.V1PodFailurePolicyRule(
                        action="FailJob",
                        on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                            operator="In", values=[42]
                        ),
                    )
                ]
            ),
        )
        self.batch.create_namespaced_job(self.ns, body)
        kind, reason, secs = self.wait_job("exit42")
        assert (kind, reason) == ("Failed", "PodFailurePolicy"), (kind, reason)
        pods = self.pods("exit42")
        assert len(pods) == 1, [p.metadata.name for p in pods]
        term = pods[0].status.container_statuses[0].state.terminated
        assert (
            pods[0].status.phase == "Failed" and term.exit_code == 42 and term.reason == "Error"
        ), pods[0].status
        return f"Failed/PodFailurePolicy in {secs}s, exitCode 42"

    def check_deadline_hold(self):
        self.batch.create_namespaced_job(
            self.ns,
            job_body(
                "hold", {"nexus.test/hold": "true"}, active_deadline_seconds=2, backoff_limit=0
            ),
        )
        self.wait_pod("hold", lambda p: p.status.phase == "Running", "Running")
        kind, reason, secs = self.wait_job("hold")
        assert (kind, reason) == ("Failed", "DeadlineExceeded"), (kind, reason)
        # The Job controller deletes the running pod; KWOK terminates and removes it.
        t0 = time.monotonic()
        while self.pods("hold") and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        assert not self.pods("hold"), "pod of the deadline job was not removed"
        return f"Failed/DeadlineExceeded in {secs}s, pod removed"

    def check_image_pull_backoff(self):
        self.batch.create_namespaced_job(
            self.ns, job_body("ipb", {"nexus.test/image-pull-backoff": "true"})
        )

        def pulling(p):
            cs = p.status.container_statuses or []
            return (
                p.status.phase == "Pending"
                and cs
                and cs[0].state.waiting
                and cs[0].state.waiting.reason == "ImagePullBackOff"
            )

        pod = self.wait_pod("ipb", pulling, "ImagePullBackOff")
        time.sleep(2)
        pod = self.core.read_namespaced_pod(pod.metadata.name, self.ns)
        assert pulling(pod), pod.status
        return "Pending, waiting ImagePullBackOff (stays)"

    def check_crash_loop(self):
        # restartPolicy OnFailure: the container restarts until backoffLimit is exceeded.
        self.batch.create_namespaced_job(
            self.ns,
            job_body(
                "crash",
                {
                    "nexus.test/crash-loop": "true",
                    "nexus.test/run-duration": "300ms",
                    "nexus.test/crash-backoff": "300ms",
                },
                restart="OnFailure",
                backoff_limit=2,
            ),
        )

        def looping(p):
            cs = p.status.container_statuses or []
            return cs and cs[0].restart_count >= 1 and cs[0].last_state.terminated is not None

        pod = self.wait_pod("crash", looping, "crash-looping")
        assert pod.status.container_statuses[0].last_state.terminated.exit_code == 1
        kind, reason, secs = self.wait_job("crash")
        assert (kind, reason) == ("Failed", "BackoffLimitExceeded"), (kind, reason)
        return f"CrashLoopBackOff restarts, then Failed/BackoffLimitExceeded in {secs}s"

    def check_ttl_after_finished(self):
        self.batch.create_namespaced_job(self.ns, job_body("ttl", ttl_seconds_after_finished=0))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            try:
                self.batch.read_namespaced_job("ttl", self.ns)
            except client.ApiException as e:
                if e.status == 404:
                    break
                raise
            time.sleep(0.2)
        else:
            raise AssertionError("job with ttlSecondsAfterFinished=0 was not deleted")
        secs = round(time.monotonic() - t0, 1)
        while self.pods("ttl") and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        assert not self.pods("ttl"), "pods of the TTL job were not garbage-collected"
        return f"Job deleted {secs}s after creation, pods garbage-collected"

    def check_crash_loop_never_fails(self):
        self.batch.create_namespaced_job(
            self.ns, job_body("crashnever", {"nexus.test/crash-loop": "true"}, backoff_limit=0)
        )
        kind, reason, secs = self.wait_job("crashnever")
        assert (kind, reason) == ("Failed", "BackoffLimitExceeded"), (kind, reason)
        return f"restartPolicy Never + crash-loop: Failed/BackoffLimitExceeded in {secs}s"

    def check_logs(self):
        self.batch.create_namespaced_job(self.ns, job_body("logs", backoff_limit=0))
        self.wait_job("logs")
        (pod,) = self.pods("logs")
        text = self.core.read_namespaced_pod_log(pod.metadata.name, self.ns, container="main")
        assert text.strip(), repr(text)
        return f"pod log served by kwok: {text.strip()!r}"

    def check_hold_stays_running(self):
        self.batch.create_namespaced_job(self.ns, job_body("holdrun", {"nexus.test/hold": "true"}))
        pod = self.wait_pod("holdrun", lambda p: p.status.phase == "Running", "Running")
        time.sleep(3)
        pod = self.core.read_namespaced_pod(pod.metadata.name, self.ns)
        assert pod.status.phase == "Running", pod.status.phase
        self.batch.delete_namespaced_job("holdrun", self.ns, propagation_policy="Background")
        t0 = time.monotonic()
        while self.pods("holdrun") and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        assert not self.pods("holdrun"), "pod not removed after deleting the job"
        return "Running after 3s; deleting the Job removes the pod"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", help="run only checks whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the namespace")
    args = ap.parse_args()
    cache = os.environ.get("NEXUS_TESTENV_CACHE", os.path.expanduser("~/.cache/nexus-testenv"))
    run = os.environ.get("NEXUS_TESTENV_RUN", os.path.join(cache, "run"))
    config.load_kube_config(
        os.environ.get("NEXUS_TEST_KUBECONFIG") or os.path.join(run, "kube", "admin.kubeconfig")
    )
    ns = "smoke-" + uuid.uuid4().hex[:6]
    client.CoreV1Api().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    # The service-account controller fills each new namespace; pods need it.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            client.CoreV1Api().read_namespaced_service_account("default", ns)
            break
        except client.ApiException:
            time.sleep(0.1)
    s = Smoke(ns)
    passed = failed = 0
    for name in sorted(n for n in dir(s) if n.startswith("check_")):
        if args.k and args.k not in name:
            continue
        try:
            print(f"PASS {name}: {getattr(s, name)()}", flush=True)
            passed += 1
        except Exception as e:  # noqa: BLE001 - report every failure
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    if not args.keep:
        client.CoreV1Api().delete_namespace(ns)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
