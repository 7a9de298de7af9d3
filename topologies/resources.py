"""A container's resource requests and limits, in Kubernetes' words (proxies and apps)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from sim.units import Cpu

__all__ = ["ResourceListSpec", "ResourcesSpec"]


class ResourceListSpec(BaseModel):
    """Quantities of a container's resources, in Kubernetes' words.

    Attributes:
        cpu: cores (``0.5``, ``"500m"``); None for none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: Cpu | None = None


class ResourcesSpec(BaseModel):
    """A container's resource requests and limits (Kubernetes ``resources``; Istio's
    ``global.proxy.resources`` and the ``sidecar.istio.io/proxyCPU*`` annotations).

    ``limits.cpu`` is enforced as the kubelet does, by a CFS quota of ``limit * period`` per
    period of the node's ``cfs_period`` (see :class:`sim.servers.SharedServer`): a container
    at its limit is throttled until the next period. A limit of at least its threads (a
    proxy's ``concurrency``, an app's ``workers``) cannot bind (they cannot use more) and
    costs nothing.

    ``requests.cpu`` is what the scheduler reserves, and the container's weight where a
    node's cores are shared by processor sharing (the kubelet sets ``cpu.shares`` to 1024 x
    the request, 2 without one; see :class:`sim.servers.SharedCores`). Under FIFO sharing it
    does not enter.

    Attributes:
        requests: what the container asks for.
        limits: what it may use at most.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: ResourceListSpec = ResourceListSpec()
    limits: ResourceListSpec = ResourceListSpec()

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourcesSpec:
        request, limit = self.requests.cpu, self.limits.cpu
        if limit is not None and limit <= 0:
            raise ValueError(f"limits.cpu must be > 0, got {limit}")
        if request is not None and limit is not None and request > limit:
            raise ValueError(
                f"requests.cpu ({request}) must be less than or equal to limits.cpu ({limit})"
            )
        return self
