"""The whole topology: a cluster, a call graph and a placement of pods on nodes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .callgraph import MAX_PODS, CallGraphSpec
from .cluster import ClusterSpec
from .memo import cached_on
from .placement import Placement, PlacementSpec, place

__all__ = ["TopologySpec"]


class TopologySpec(BaseModel):
    """A complete, validated topology that models can build a simulation from.

    Validation also places the pods once, so an explicit assignment to an unknown node or pod,
    an unassigned pod or a ``pack`` that does not fit is reported here.

    Attributes:
        name: A label for reports (``bookinfo``).
        cluster: The nodes and the network.
        call_graph: The workloads and their calls.
        placement: How pods are assigned to nodes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field(default="custom", min_length=1)
    cluster: ClusterSpec
    call_graph: CallGraphSpec
    placement: PlacementSpec = Field(default_factory=PlacementSpec)

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
