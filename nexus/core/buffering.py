"""The BUFFERED step (SPEC §5): render a run's Job manifest from what its record holds.

Accepting a run stores only what makes it durable and launchable later: the record (with
the merged spec, the shard and the signed payload URL) and the payload. The Job is
rendered when the launch pipeline takes the run out of NEW, not on the accept path: the
pipeline's pace is the launch rate, so a burst of accepts does not pay for rendering,
signing the two result URLs and writing a 1.5 KB Job row per run up front. What the
rendering reads is fixed at accept time (spec, shard, payload URL), except two things
that are better read late: the workgroup's placement (affinity, tolerations) as it is
when the Job is made, and the parent's Job uid, which a parent still queued at accept
time has by then. A workgroup deleted meanwhile fails the run with SCHEDULING_FAILED.
"""

from __future__ import annotations

from nexus.core.jobs import JobContext, render_job
from nexus.core.launching import DRY_RUN_UID
from nexus.core.models import LifecycleStage as S
from nexus.core.models import Run, SubmissionEntry
from nexus.core.ports import PayloadBuffer, RunStore, TemplateSource
from nexus.core.signing import RUN_TOKEN_ENV, RunTokens
from nexus.core.units import parse_duration
from nexus.errors import LaunchError

# How long after its deadline a run may still report: the report of an algorithm that
# finishes in its last second, and its retries, arrive after the deadline.
TOKEN_GRACE = 300.0


class RenderConfig:
    def __init__(
        self,
        *,
        namespace: str,
        nexus_version: str,
        receiver_url: str,
        job_ttl: int,
        payload_valid_for: float,
        tokens: RunTokens,
        token_lifetime: float,
    ) -> None:
        self.namespace = namespace
        self.nexus_version = nexus_version
        self.receiver_url = receiver_url
        self.job_ttl = job_ttl
        self.payload_valid_for = payload_valid_for  # when the run does not say
        self.tokens = tokens
        self.token_lifetime = token_lifetime  # when the run has no deadline


class JobRenderer:
    def __init__(
        self,
        store: RunStore,
        buffer: PayloadBuffer,
        templates: TemplateSource,
        config: RenderConfig,
    ) -> None:
        self._store = store
        self._buffer = buffer
        self._templates = templates
        self._config = config

    async def render(self, run: Run) -> SubmissionEntry:
        """The Job this run is (or will be) launched as. Raise a non-retryable
        LaunchError when the run can no longer be rendered."""
        spec = run.applied_configuration
        if spec is None or spec.workgroup_ref is None:
            raise LaunchError("the run's record holds no applied configuration", retryable=False)
        workgroup = await self._templates.workgroup(spec.workgroup_ref.name)
        if workgroup is None:
            raise LaunchError(
                f"workgroup '{spec.workgroup_ref.name}' no longer exists", retryable=False
            )
        valid_for = (
            parse_duration(run.payload_valid_for)
            if run.payload_valid_for
            else self._config.payload_valid_for
        )
        upload_url, result_url = self._buffer.result_urls(run.algorithm, run.id, valid_for)
        deadline = spec.runtime_environment.deadline_seconds if spec.runtime_environment else None
        token_valid_for = (
            deadline + TOKEN_GRACE if deadline is not None else self._config.token_lifetime
        )
        manifest = render_job(
            spec,
            workgroup.spec,
            JobContext(
                run_id=run.id,
                algorithm=run.algorithm,
                cluster=run.cluster,
                namespace=self._config.namespace,
                payload_url=run.payload_uri,
                nexus_version=self._config.nexus_version,
                ttl_seconds_after_finished=self._config.job_ttl,
                parent=run.parent,
                parent_job_uid=await self._parent_job_uid(run),
                extra_env={
                    "NEXUS__CLIENT__RECEIVER": self._config.receiver_url,
                    "NEXUS__RESULT_UPLOAD_URL": upload_url,
                    "NEXUS__RESULT_URL": result_url,
                    RUN_TOKEN_ENV: self._config.tokens.issue(
                        run.algorithm, run.id, token_valid_for
                    ),
                },
            ),
        )
        return SubmissionEntry(
            algorithm=run.algorithm, id=run.id, cluster=run.cluster, template=manifest
        )

    async def _parent_job_uid(self, run: Run) -> str:
        """The parent's Job uid for the child's owner reference: only a real Job on the
        same shard can own it (owner references do not cross clusters), and only while
        the parent runs. A finished parent's Job is deleted after its TTL, and Kubernetes
        garbage-collects a Job whose owners are all gone, so a child owned by it would be
        deleted under its feet (at once, if the parent's Job has already expired)."""
        if run.parent is None:
            return ""
        if run.job_uid == DRY_RUN_UID:
            # Nothing is launched, so nothing can be owned: a stand-in uid, the parent's
            # request id, as the Go system writes for dry runs whether the parent exists.
            return run.parent.request_id
        parent = await self._store.get(run.parent.algorithm_name, run.parent.request_id)
        if (
            parent is None
            or parent.lifecycle_stage is not S.RUNNING
            or parent.job_uid in ("", DRY_RUN_UID)
            or parent.cluster != run.cluster
        ):
            return ""
        return parent.job_uid
