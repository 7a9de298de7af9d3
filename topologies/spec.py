"""The whole topology: a cluster, a call graph and a placement of pods on nodes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .callgraph import MAX_LABELS, MAX_PODS, NAME_PATTERN, CallGraphSpec, LabelKey, LabelValue
from .cluster import ClusterSpec
from .memo import cached_on
from .placement import Placement, PlacementSpec, place

__all__ = ["NamespaceSpec", "TopologySpec", "MAX_NAMESPACES"]

MAX_NAMESPACES = 10_000
"""The most namespaces a topology may label (Kubernetes' scalability thresholds name 10,000
namespaces per cluster)."""

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


class NamespaceSpec(BaseModel):
    """A Kubernetes namespace's metadata, as the mesh reads it.

    Attributes:
        labels: The namespace's labels: what Istio's injection webhook
            (``istio-injection: enabled|disabled``, ``istio.io/rev``) and ambient enrollment
            (``istio.io/dataplane-mode: ambient``) and waypoint binding
            (``istio.io/use-waypoint``) select on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)


class TopologySpec(BaseModel):
    """A complete, validated topology that models can build a simulation from.

    Validation also places the pods once, so an explicit assignment to an unknown node or pod,
    an unassigned pod or a ``pack`` that does not fit is reported here.

    Attributes:
        name: A label for reports (``bookinfo``).
        cluster: The nodes and the network.
        call_graph: The workloads and their calls.
        placement: How pods are assigned to nodes.
        namespaces: Labels of namespaces, by name (a namespace not listed has no labels;
            services name their namespace in ``call_graph``; the load generator's is
            ``default``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field(default="custom", min_length=1)
    cluster: ClusterSpec
    call_graph: CallGraphSpec
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    namespaces: dict[Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)], NamespaceSpec] = (
        Field(default_factory=dict, max_length=MAX_NAMESPACES)
    )

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """The labels of ``namespace`` (none when the topology does not list it)."""
        found = self.namespaces.get(namespace)
        return found.labels if found is not None else _NO_LABELS

    @model_validator(mode="after")
    def _check_placement(self) -> TopologySpec:
        # Counted before placing them: placing is linear in pods, and a count beyond any
        # cluster's would take minutes to place before being refused.
        pods = sum(service.replicas for service in self.call_graph.services)
        if pods > MAX_PODS:
            raise ValueError(
                f"call_graph: {pods:,} pods (the sum of the workloads' replicas), more than "
                f"the {MAX_PODS:,} of Kubernetes' largest supported cluster"
            )
        # place() raises TopologyError, a ValueError, which pydantic reports under this model.
        self.pods()
        return self

    def pods(self) -> Placement:
        """Place the pods on the nodes (deterministic for a given spec).

        The placement is computed once (at validation) and shared: a :class:`Placement` is
        immutable.

        Returns:
            The placement, with lookups by pod name, workload and node.
        """
        return cached_on(
            self,
            "placement",
            (self.cluster, self.call_graph, self.placement),
            lambda: Placement(place(self.cluster, self.call_graph, self.placement)),
        )
