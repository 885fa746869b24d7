"""Whose share of the virtual queue a run is served in: its tenant.

A run's tenant is its template's name, unless the template or else its workgroup carries
the label ``science.sneaksanddata.com/tenant``: teams that share a workgroup (or own
several templates) label it once and are one tenant. The template's label wins, being
the more specific. Tenants share each shard's lane by weighted fair queueing and may
have a limit on queued runs (settings ``s3-buffer.buffer-config.tenants``).

With ``tenants.tenant-by: caller`` the tenant of a run created by an authenticated
caller (auth.mode kubernetes or oidc) is that caller, so each user or ServiceAccount
gets its own share whatever templates it runs. The caller is stored with the run
(``Run.created_by``), so a run recovered after a restart or taken over from a dead
scheduler is served as the same tenant; a run stored without one (auth.mode none, or a
row from before the column) falls back to its template's tenant.
"""

from __future__ import annotations

from nexus.core.models import Run, Template, Workgroup
from nexus.core.ports import TemplateSource

TENANT_LABEL = "science.sneaksanddata.com/tenant"


def tenant_of(template: Template, workgroup: Workgroup | None, caller: str | None = None) -> str:
    if caller:
        return caller
    label = template.labels.get(TENANT_LABEL) or (workgroup and workgroup.labels.get(TENANT_LABEL))
    return label or template.name


class Tenancy:
    """Resolves the tenant of a stored run (one found pending by recovery) the way the
    accept did: its creator with ``by_caller``, else from its template and workgroup as
    they are now; a template deleted since leaves the run its algorithm's name."""

    def __init__(self, templates: TemplateSource, by_caller: bool = False) -> None:
        self._templates = templates
        self._by_caller = by_caller

    async def of_run(self, run: Run) -> str:
        if self._by_caller and run.created_by:
            return run.created_by
        template = await self._templates.template(run.algorithm)
        if template is None:
            return run.algorithm
        ref = run.applied_configuration.workgroup_ref if run.applied_configuration else None
        workgroup = await self._templates.workgroup(ref.name) if ref is not None else None
        return tenant_of(template, workgroup)
