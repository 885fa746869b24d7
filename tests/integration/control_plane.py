"""The test control planes of scripts/testenv ("kube", and "kube2" for a second cluster)
as the integration tests reach them: a small API client of their own (independent of the
code under test), and the chart's CRDs installed. The fixtures are in conftest.py; this
is a plain module so that the load benchmark can use it too."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import urllib3
import yaml
from contract.servers import require
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "helm" / "nexus" / "crds"
GROUP = "science.sneaksanddata.com"
RUN_SELECTOR = f"{GROUP}/nexus-component=algorithm-run"
# Each test control plane by its testenv name, and the variable naming its kubeconfig.
CLUSTERS = {"kube": "NEXUS_TEST_KUBECONFIG", "kube2": "NEXUS_TEST_KUBECONFIG_2"}


def require_kubeconfig(variable: str = CLUSTERS["kube"]) -> str:
    """The kubeconfig of a test control plane: ``NEXUS_TEST_KUBECONFIG`` (testenv "kube")
    or ``NEXUS_TEST_KUBECONFIG_2`` (the second one, testenv "kube2")."""
    component = next(name for name, named in CLUSTERS.items() if named == variable)
    path = require(component, (variable,))[variable]
    if not Path(path).is_file():
        pytest.fail(
            f"{variable}={path} does not exist: is the {component} test server up?",
            pytrace=False,
        )
    return path


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})", pytrace=False)


class Kube:
    """The test's own small API client (independent of the code under test)."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = Configuration()
        kube_config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration, persist_config=False
        )
        self._configuration = configuration
        self._api = ApiClient(configuration)
        self._http = self._api.rest_client.pool_manager
        self.host = configuration.host

    def close(self) -> None:
        self._api.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201, 202),
        **query: Any,
    ) -> dict | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer:
            headers[bearer["key"]] = bearer["value"]
        url = self.host + path + ("?" + urlencode(query) if query else "")
        response = self._http.request(
            method,
            url,
            headers=headers,
            body=None if body is None else json.dumps(body).encode(),
            timeout=urllib3.Timeout(connect=5, read=60),
        )
        data = json.loads(response.data) if response.data else {}
        if response.status == 404 and 404 not in ok:
            return None
        assert response.status in ok, (
            f"{method} {path} -> {response.status}: {data.get('message', data)}"
        )
        return data

    def apply(self, base: str, obj: dict) -> dict:
        """Create ``obj`` under the collection path ``base``, or replace it."""
        created = self.call("POST", base, obj, ok=(200, 201, 409))
        if created.get("code") != 409:
            return created
        path = f"{base}/{obj['metadata']['name']}"
        # A controller may change the object (adopt it) between our read and our write:
        # 409 then means "read again", as for any client of the API.
        for _ in range(10):
            current = self.call("GET", path)
            version = current["metadata"]["resourceVersion"]
            meta = {**obj["metadata"], "resourceVersion": version}
            replaced = self.call("PUT", path, {**obj, "metadata": meta}, ok=(200, 201, 409))
            if replaced.get("code") != 409:
                return replaced
        raise AssertionError(f"PUT {path} kept conflicting")

    def jobs(self, namespace: str) -> list[dict]:
        return self.call(
            "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", labelSelector=RUN_SELECTOR
        )["items"]

    def job(self, namespace: str, name: str) -> dict | None:
        return self.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")

    def pods(self, namespace: str, job_name: str) -> list[dict]:
        return self.call(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            labelSelector=f"batch.kubernetes.io/job-name={job_name}",
        )["items"]

    def create_namespace(self, name: str) -> str:
        self.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        # Pods need the namespace's default ServiceAccount, made by the controller-manager.
        wait_for(
            lambda: self.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            30,
            f"the default ServiceAccount of namespace {name}",
        )
        return name

    def delete_namespace(self, name: str, wait: float = 300.0) -> None:
        """Delete and wait until it is gone, so the next test starts on a quiet cluster
        (a namespace holding thousands of Jobs keeps the controllers busy for a while)."""
        # Left to the namespace controller, thousands of Jobs go through the garbage
        # collector one by one and each Pod through a graceful delete: minutes. Orphan
        # the Pods, then force-delete them (grace 0: removed at once), in two calls.
        self.call(
            "DELETE",
            f"/apis/batch/v1/namespaces/{name}/jobs",
            ok=(200, 202, 404),
            propagationPolicy="Orphan",
        )
        self.call(
            "DELETE", f"/api/v1/namespaces/{name}/pods", ok=(200, 202, 404), gracePeriodSeconds=0
        )
        self.call("DELETE", f"/api/v1/namespaces/{name}", ok=(200, 202, 404))
        deadline = time.monotonic() + wait
        while self.call("GET", f"/api/v1/namespaces/{name}") is not None:
            if time.monotonic() > deadline:
                print(f"namespace {name} still terminating after {wait:.0f}s")
                return
            time.sleep(0.5)


def install_crds(client: Kube) -> None:
    """Apply the chart's CRDs and wait until the API server serves them."""
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        client.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        name = crd["metadata"]["name"]
        wait_for(
            lambda name=name: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (
                    client.call(
                        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                    )
                    .get("status", {})
                    .get("conditions")
                    or []
                )
            ),
            30,
            f"CRD {name} to be established",
        )
