"""The experiment spec: what to simulate, validated once at the edge.

An experiment names a topology (a catalog entry with parameters, a YAML file, or an inline
topology), a mesh (a built-in profile, optionally with overrides), a workload, a duration, a
warm-up, a seed and a number of replications. Everything is checked when the spec is read,
so that ``meshsim validate`` reports every problem with the path of the field at fault.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from experiments.overrides import apply_overrides, deep_merge, parse_assignment
from experiments.profiles import ProfileError, list_profiles, resolve_mesh, validate_mesh
from experiments.sweep import SweepSpec, sweep_points
from experiments.timeseries_spec import MAX_WINDOWS, TimeSeriesSpec
from models.architectures import ARCHITECTURES
from models.control_plane import ConfigChangeSpec
from models.faults import MESH_FAULTS, FaultSpec
from models.ingress import check_egress, check_ingress
from models.policies import MAX_POLICIES, Policy, PolicyKind, with_policy
from models.policy_check import check_annotations, check_policies
from models.workload import WorkloadSpec
from sim.units import Duration
from sim.yamlsafe import Mark, YamlInputError, read_yaml_file
from topologies import (
    ServiceSpec,
    TopologyError,
    TopologySpec,
    expected_visits,
    get_topology,
    load_topology,
)

__all__ = [
    "ExperimentSpec",
    "TopologyRef",
    "MeshRef",
    "SpecError",
    "load_spec",
    "spec_from_dict",
    "format_validation_error",
]


class SpecError(ValueError):
    """A spec that cannot be read or does not validate; the message is for the user."""


MAX_SEED = 2**63 - 1
"""The largest seed: seeds are integers in [0, 2**63), as numpy's seed sequences and every
tool that stores them as a signed 64-bit integer take them."""

MAX_VISITS_PER_REQUEST = 10_000
"""The most service visits one request may make on average (a chain of 10,000 services makes
10,000). Each visit is several events, so a topology beyond this completes few requests or
none in a run of any useful length, and it is refused before the run."""


class TopologyRef(BaseModel):
    """Which topology: a catalog entry with parameters, a YAML file, or one given inline.

    A bare string is a catalog name (``bookinfo``), or a file when it ends in ``.yaml``; a
    mapping with ``cluster`` and ``call_graph`` is an inline topology.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    catalog: str | None = None
    params: dict[str, Any] = {}
    file: str | None = None
    inline: TopologySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"file": data} if data.endswith((".yaml", ".yml")) else {"catalog": data}
        if isinstance(data, dict) and "call_graph" in data:
            return {"inline": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> TopologyRef:
        given = [k for k in ("catalog", "file", "inline") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'catalog', 'file' or an inline topology")
        if self.catalog is None and self.params:
            raise ValueError("'params' go with 'catalog'")
        return self

    def resolve(self) -> TopologySpec:
        """Build or load the topology (raises TopologyError)."""
        if self.inline is not None:
            return self.inline
        if self.catalog is not None:
            try:
                key = json.dumps(self.params, sort_keys=True)
            except TypeError:  # parameters that are not plain data: build it afresh
                return get_topology(self.catalog, **self.params)
            return _catalog_topology(self.catalog, key)
        assert self.file is not None
        return load_topology(Path(self.file))


@lru_cache(maxsize=16)
def _catalog_topology(name: str, params_json: str) -> TopologySpec:
    """A catalog topology, built once per (name, parameters): a spec is validated field by
    field and point by point of a sweep, and a 10,000-pod mesh takes a while to build.
    Topology specs are frozen, so sharing one is safe."""
    return get_topology(name, **json.loads(params_json))


class MeshRef(BaseModel):
    """Which mesh: a built-in profile and overrides of its fields, or a mesh in full.

    A bare string is a profile name (``istio-1.8``). A mapping with ``architecture`` is a
    mesh spec given in full (``{architecture: sidecar, proxy: {...}}``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = "none"
    overrides: dict[str, Any] = {}
    inline: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"profile": data}
        if isinstance(data, dict) and "architecture" in data:
            return {"profile": "custom", "inline": data}
        return data

    @model_validator(mode="after")
    def _known(self) -> MeshRef:
        if self.inline is None and self.profile not in list_profiles():
            raise ValueError(
                f"unknown profile {self.profile!r}; known: {', '.join(list_profiles())}"
            )
        try:
            self.resolve()
        except ValidationError as error:
            where = "mesh" if self.inline is not None else "mesh.overrides"
            raise ValueError(
                "the mesh is not valid:\n" + format_validation_error(error, prefix=where)
            ) from None
        return self

    def resolve(self) -> Any:
        """The validated mesh spec."""
        if self.inline is not None:
            return validate_mesh(deep_merge(self.inline, self.overrides))
        return resolve_mesh(self.profile, self.overrides)


MAX_REPLICATIONS = 1000
"""The most replications a precision target may run."""

PrecisionFigure = Literal[
    "throughput_rps", "error_rate", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms"
]


class PrecisionSpec(BaseModel):
    """Replications until the figures are known to a relative precision.

    After ``replications`` (at least 2), one more replication runs while the 95 % confidence
    half-width of any listed end-to-end figure is more than ``relative`` times its mean, and
    at most ``max_replications`` in all (the budget counts that many). A figure whose mean is
    0 (no errors) is precise when its half-width is 0 too.

    Attributes:
        relative: the half-width as a share of the mean (0.05: ± 5 %).
        figures: the end-to-end figures that must reach it.
        max_replications: the cap.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    relative: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    figures: Annotated[list[PrecisionFigure], Field(min_length=1)] = ["mean_ms"]
    max_replications: Annotated[int, Field(ge=2, le=MAX_REPLICATIONS)] = 30

    def reached(self, intervals: Any) -> bool:
        """True when every listed figure of ``intervals`` (``FigureIntervals``) is precise."""
        for name in self.figures:
            interval = getattr(intervals, name)
            if interval.n < 2 or math.isnan(interval.half_width):
                return False
            if interval.half_width > self.relative * abs(interval.mean):
                return False
        return True


class ExperimentSpec(BaseModel):
    """One experiment.

    Attributes:
        name: a name for results and reports.
        topology: catalog entry, file or inline topology.
        mesh: profile name or profile with overrides.
        workload: open loop (``rate_rps``) or closed loop (``connections``, ``qps``).
        duration: simulated time per replication, warm-up included (``"30s"``).
        warmup: cut from all statistics (``"2s"``).
        seed: the root seed; replications spawn theirs from it.
        replications: independent runs whose statistics are merged (with ``precision``,
            the first ones, at least 2).
        precision: more replications until the figures are known to a relative precision
            (see :class:`PrecisionSpec`).
        client_node: the node of the load generator (default: the first node).
        trace_every: keep the whole trace of one request in this many (0 = none).
        faults: what breaks during the run (``mixer_outage``, ``control_plane_outage``).
        changes: configuration changes during the run (``scale``, ``deploy``,
            ``route_weights``, ``add_service``), pushed by the mesh's control plane.
        policies: traffic policies, as Kubernetes objects in Istio's, Envoy's or SMI's
            words (``VirtualService``, ``DestinationRule``, ``AuthorizationPolicy``,
            ``LocalRateLimit``, ``TrafficSplit``, ``HTTPRouteGroup``, ``TrafficTarget``).
        sweep: a grid of values by dotted path; the spec then stands for every point.
        timeseries: record the run in fixed windows (``{window: 1s}``) and judge each fault
            (blast radius, time to recover); None = off (totals only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "experiment"
    topology: TopologyRef
    mesh: MeshRef = MeshRef()
    workload: WorkloadSpec
    duration: Annotated[Duration, Field(gt=0)] = 30.0
    warmup: Duration = 2.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 1
    replications: Annotated[int, Field(ge=1)] = 1
    client_node: str | None = None
    trace_every: Annotated[int, Field(ge=0)] = 0
    faults: list[FaultSpec] = []
    changes: list[ConfigChangeSpec] = []
    policies: Annotated[list[Policy], Field(max_length=MAX_POLICIES)] = []
    sweep: SweepSpec | None = None
    timeseries: TimeSeriesSpec | None = None
    precision: PrecisionSpec | None = None

    @property
    def most_replications(self) -> int:
        """The replications the run may make: ``replications``, or with a precision target
        its cap (what the budget counts)."""
        if self.precision is None:
            return self.replications
        return max(self.replications, self.precision.max_replications)

    @model_validator(mode="after")
    def _precision_bounds(self) -> ExperimentSpec:
        if self.precision is not None and self.replications > self.precision.max_replications:
            raise ValueError(
                f"precision.max_replications ({self.precision.max_replications}) is below "
                f"replications ({self.replications}), the replications made before the "
                "precision is looked at"
            )
        return self

    @model_validator(mode="after")
    def _windows_bounded(self) -> ExperimentSpec:
        if self.timeseries is not None:
            ratio = self.duration / self.timeseries.window  # inf for a subnormal window
            windows = math.ceil(ratio - 1e-9) if math.isfinite(ratio) else math.inf
            if windows > MAX_WINDOWS:
                raise ValueError(
                    f"timeseries.window: {self.timeseries.window:g} s makes {windows:,} windows "
                    f"of a {self.duration:g} s run; at most {MAX_WINDOWS:,} (make it wider)"
                )
        return self

    @model_validator(mode="after")
    def _sweep_points_valid(self) -> ExperimentSpec:
        if self.sweep is None:
            return self
        base = self.model_dump(mode="json", exclude={"sweep"})
        for i, (assignments, data) in enumerate(sweep_points(base, self.sweep)):
            try:
                ExperimentSpec.model_validate(data)
            except ValidationError as error:
                where = ", ".join(f"{k}={v!r}" for k, v in assignments.items())
                raise ValueError(
                    f"sweep point {i} ({where}) is not valid:\n" + format_validation_error(error)
                ) from None
        return self

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_is_an_integer(cls, value: Any) -> Any:
        # Not pydantic's lax int: it reads ``true`` as 1 and ``2.0`` as 2, so a typo would
        # run with a seed nobody chose.
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 0 <= value <= MAX_SEED
        ):
            raise ValueError(f"must be an integer from 0 to 2**63 - 1, got {value!r}")
        return value

    @field_validator("workload", mode="before")
    @classmethod
    def _workload_kind(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            raise ValueError(
                "kind is required: open_loop (with rate_rps) or closed_loop "
                "(with connections and qps)"
            )
        return value

    @field_validator("topology", mode="after")
    @classmethod
    def _topology_resolves(cls, value: TopologyRef, info: ValidationInfo) -> TopologyRef:
        base = (info.context or {}).get("base_dir")
        if value.file is not None and base is not None and not Path(value.file).is_absolute():
            # Files are named relative to the spec; keep the path that works from anywhere.
            value = value.model_copy(update={"file": str(Path(base, value.file).resolve())})
        try:
            topology = value.resolve()
        except TopologyError as error:
            raise ValueError(str(error)) from None
        _check_visits(topology, value)
        return value

    @model_validator(mode="after")
    def _times(self) -> ExperimentSpec:
        if self.warmup >= self.duration:
            raise ValueError(
                f"warmup ({self.warmup:g} s) must be shorter than duration ({self.duration:g} s)"
            )
        return self

    @model_validator(mode="after")
    def _faults_apply(self) -> ExperimentSpec:
        mesh = self.mesh.resolve()
        for i, fault in enumerate(self.faults):
            if fault.kind == "mixer_outage" and getattr(mesh, "mixer", None) is None:
                which = "this mesh" if self.mesh.inline else f"profile {self.mesh.profile!r}"
                raise ValueError(
                    f"faults.{i}.kind: a mixer_outage needs a mesh with Mixer ({which} has none)"
                )
            if (
                fault.kind == "control_plane_outage"
                and getattr(mesh, "control_plane", None) is None
            ):
                raise ValueError(
                    f"faults.{i}.kind: a control_plane_outage needs a mesh with a control_plane"
                )
            if fault.kind == "ca_outage" and (
                getattr(mesh, "control_plane", None) is None
                or getattr(mesh.control_plane, "certificates", None) is None
            ):
                raise ValueError(
                    f"faults.{i}.kind: a ca_outage needs a control_plane with certificates"
                )
            end = fault.end_s(float("inf"))
            for j, other in enumerate(self.faults[:i]):
                if (
                    other.kind == fault.kind
                    and fault.kind in MESH_FAULTS
                    and fault.start < other.end_s(float("inf"))
                    and other.start < end
                ):
                    raise ValueError(f"faults.{i}: overlaps faults.{j}, of the same kind")
            if fault.start >= self.duration:
                raise ValueError(
                    f"faults.{i}.start: {fault.start:g} s is after the run ({self.duration:g} s)"
                )
            if fault.duration is not None and fault.start + fault.duration > self.duration:
                raise ValueError(f"faults.{i}: the fault ends after the run ({self.duration:g} s)")
            _check_fault_target(i, fault, self, mesh)
        return self

    @model_validator(mode="after")
    def _edges_fit(self) -> ExperimentSpec:
        mesh = self.mesh.resolve()
        ingress = getattr(mesh, "ingress", None)
        egress = getattr(mesh, "egress", None)
        if ingress is None and egress is None:
            return self
        try:
            topology = self.resolve_topology()
        except TopologyError:
            return self  # reported on the topology field already
        graph = topology.call_graph
        nodes = [n.name for n in topology.cluster.nodes]
        if ingress is not None:
            check_ingress(ingress, mesh.architecture, set(graph.hosts()), graph.entry, nodes)
        if egress is not None:
            check_egress(egress, set(graph.hosts()), nodes)
        return self

    @model_validator(mode="after")
    def _changes_apply(self) -> ExperimentSpec:
        if not self.changes:
            return self
        try:
            graph = self.resolve_topology().call_graph
        except TopologyError:
            return self  # reported on the topology field already
        workloads = {s.name for s in graph.services}
        hosts = set(graph.hosts())
        policies = list(self.policies)
        # In the order they happen, which is the order the run makes them in.
        order = sorted(range(len(self.changes)), key=lambda k: self.changes[k].at)
        for i in order:
            change = self.changes[i]
            where = f"changes.{i}"
            if change.kind == "policy":
                assert change.policy is not None
                policies = with_policy(policies, change.policy)
                try:
                    check_policies(
                        policies,
                        graph,
                        self.mesh.resolve(),
                        self.resolve_topology().namespace_labels,
                    )
                except ValueError as error:
                    raise ValueError(
                        f"{where}.policy: with this change, the policies are not valid: {error}"
                    ) from None
            if change.at >= self.duration:
                raise ValueError(
                    f"{where}.at: {change.at:g} s is after the run ({self.duration:g} s)"
                )
            if change.kind in ("scale", "deploy") and change.service not in workloads:
                raise ValueError(
                    f"{where}.service: no workload {change.service!r}; "
                    f"workloads: {', '.join(sorted(workloads))}"
                )
            if change.kind == "scale" and change.replicas is None:
                raise ValueError(f"{where}.replicas: a scale change needs the new replica count")
            if change.kind == "route_weights" and change.service not in hosts:
                raise ValueError(f"{where}.service: no service {change.service!r}")
            if change.kind == "add_service":
                if change.service in workloads or change.service in hosts:
                    raise ValueError(f"{where}.service: {change.service!r} exists already")
                try:
                    ServiceSpec(name=change.service)
                except ValidationError:
                    raise ValueError(
                        f"{where}.service: {change.service!r} is not a valid service name "
                        "(lower-case letters, digits and '-')"
                    ) from None
                workloads.add(change.service)
                hosts.add(change.service)
        return self

    @model_validator(mode="after")
    def _policies_apply(self) -> ExperimentSpec:
        try:
            graph = self.resolve_topology().call_graph
        except TopologyError:
            return self  # reported on the topology field already
        check_annotations(graph)
        if self.policies:
            check_policies(
                self.policies, graph, self.mesh.resolve(), self.resolve_topology().namespace_labels
            )
        return self

    @model_validator(mode="after")
    def _waypoints_exist(self) -> ExperimentSpec:
        waypoints = getattr(self.mesh.resolve(), "waypoints", None)
        if isinstance(waypoints, list):
            try:
                hosts = set(self.resolve_topology().call_graph.hosts())
            except TopologyError:
                return self
            hosts |= {c.service for c in self.changes if c.kind == "add_service"}
            unknown = [h for h in waypoints if h not in hosts]
            if unknown:
                raise ValueError(
                    f"mesh.waypoints: no service {', '.join(map(repr, unknown))}; "
                    f"services: {', '.join(sorted(hosts))}"
                )
        return self

    @model_validator(mode="after")
    def _client_node(self) -> ExperimentSpec:
        if self.client_node is not None:
            try:
                nodes = [n.name for n in self.resolve_topology().cluster.nodes]
            except TopologyError:
                return self  # reported on the topology field already
            if self.client_node not in nodes:
                raise ValueError(
                    f"client_node {self.client_node!r} is not a node of the topology; "
                    f"nodes: {', '.join(nodes)}"
                )
        return self

    def resolve_topology(self) -> TopologySpec:
        """The topology this spec names."""
        return self.topology.resolve()

    def effective(self) -> ExperimentSpec:
        """This experiment with its topology and mesh resolved and written out in full (a
        catalog entry built, a file read, a profile's fields with its overrides merged), so
        that it re-runs to the same numbers after a profile, the catalog or the file change.
        The mesh keeps its profile's name, as a label."""
        mesh = MeshRef(
            profile=self.mesh.profile, inline=self.mesh.resolve().model_dump(mode="json")
        )
        return self.model_copy(
            update={"topology": TopologyRef(inline=self.resolve_topology()), "mesh": mesh}
        )


def _check_fault_target(i: int, fault: FaultSpec, spec: ExperimentSpec, mesh: Any) -> None:
    """The pods, nodes or zones a fault names exist; a proxy crash needs proxies."""
    if fault.kind in MESH_FAULTS:
        return
    try:
        topology = spec.resolve_topology()
    except TopologyError:
        return
    where = f"faults.{i}.target"
    nodes = {n.name for n in topology.cluster.nodes}
    zones = {n.zone for n in topology.cluster.nodes}
    target = fault.target
    graph = topology.call_graph
    if target.node is not None and target.node not in nodes:
        raise ValueError(
            f"{where}.node: no node {target.node!r}; nodes: {', '.join(sorted(nodes))}"
        )
    if target.zone is not None and target.zone not in zones:
        raise ValueError(
            f"{where}.zone: no zone {target.zone!r}; zones: {', '.join(sorted(zones))}"
        )
    if target.link is not None:
        for k, name in enumerate(target.link):
            if name not in nodes and name not in zones:
                raise ValueError(f"{where}.link.{k}: {name!r} is neither a node nor a zone")
        if target.link[0] == target.link[1]:
            raise ValueError(f"{where}.link: a link between {target.link[0]!r} and itself")
        return
    if fault.kind == "node_failure":
        return
    if target.service is not None and target.service not in graph.hosts():
        raise ValueError(f"{where}.service: no service {target.service!r}")
    names = {s.name for s in graph.services}
    if target.workload is not None and target.workload not in names:
        raise ValueError(f"{where}.workload: no workload {target.workload!r}")
    pods = [p for p in topology.pods().pods if _pod_selected(p, target, graph, topology)]
    only_place = not any((target.service, target.workload, target.version, target.pod)) and (
        target.node is not None or target.zone is not None
    )
    if not pods and not (fault.kind == "proxy_crash" and only_place):
        raise ValueError(f"{where}: selects no pod")
    if fault.kind == "proxy_crash" and getattr(mesh, "architecture", "none") in (
        "none",
        "proxyless",
    ):
        raise ValueError(f"faults.{i}.kind: the {mesh.architecture!r} mesh has no proxy to crash")


def _pod_selected(pod: Any, target: Any, graph: Any, topology: TopologySpec) -> bool:
    svc = graph.service(pod.service)
    zone = {n.name: n.zone for n in topology.cluster.nodes}[pod.node]
    return (
        (target.service is None or svc.host_name == target.service)
        and (target.workload is None or svc.name == target.workload)
        and (target.version is None or svc.version == target.version)
        and (target.pod is None or pod.name == target.pod)
        and (target.node is None or pod.node == target.node)
        and (target.zone is None or zone == target.zone)
    )


def _check_visits(topology: TopologySpec, ref: TopologyRef) -> None:
    """Refuse a topology whose requests would make too many service visits to simulate."""
    graph = topology.call_graph
    visits = expected_visits(graph)
    if visits <= MAX_VISITS_PER_REQUEST:
        return
    amount = "more than 1.8e308" if visits == float("inf") else f"{visits:,.4g}"
    hint = "make fewer calls, or make them less likely (a call's probability)"
    if ref.catalog == "random_dag":
        hint = (
            "with random_dag, keep max_callees x call_probability below 1 (the defaults, "
            "3 x 0.3, make at most 10 visits)"
        )
    raise ValueError(
        f"one request to {graph.entry!r} would visit {amount} services on average (the "
        "expected number, from the call graph's calls and their probabilities), more than "
        f"the {MAX_VISITS_PER_REQUEST:,} a run can simulate: every visit costs events, so "
        f"few requests or none would complete; {hint}"
    )


def format_validation_error(
    error: ValidationError, prefix: str = "", places: Places | None = None
) -> str:
    """One line per problem: ``field.path: message``, and where the field is in the file.

    Args:
        error: The validation error.
        prefix: The path of the validated data inside the spec (``mesh.overrides``).
        places: Where the fields are in the spec file, if it was read from one.
    """
    lines = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"] if not _is_union_tag(part)]
        if prefix:
            parts = [*prefix.split("."), *parts]
        if len(parts) > 2 and parts[0] in ("topology", "mesh") and parts[1] == "inline":
            # A topology or mesh given in full is written without 'inline' (the shorthand):
            # name the field as the file and --set write it.
            parts = [parts[0], *parts[2:]]
        loc = ".".join(parts)
        message = item["msg"].removeprefix("Value error, ")
        named = _NAMES_A_FIELD.match(message)
        if not loc and named:
            line = message  # a check across fields: its message starts with the field
            parts = named.group(0).rstrip(":").split(".")
        else:
            line = f"{loc or '<spec>'}: {message}"
        lines.append(places.annotate(line, parts) if places is not None else line)
    return "\n".join(lines)


class Places:
    """Where the fields of a spec are in its YAML file, to point at them in errors.

    Fields changed by ``--set`` are not where the file has them: an error about one of them
    says so instead.

    Args:
        marks: line and column by path of keys (see :class:`sim.yamlsafe.YamlDocument`).
        overridden: the paths set by ``--set``.
    """

    def __init__(
        self, marks: Mapping[tuple[str, ...], Mark], overridden: list[list[str]] | None = None
    ) -> None:
        self._marks = marks
        self._overridden = [tuple(keys) for keys in overridden or []]

    def where(self, path: list[str]) -> str:
        """``line 3, column 5`` for the field at ``path`` (or the nearest enclosing one that
        the file has), ``set by --set`` for an overridden one, or "" if not known."""
        key = tuple(path)
        if any(key[: len(o)] == o for o in self._overridden):
            return "set by --set"
        for end in range(len(key), 0, -1):
            mark = self._marks.get(key[:end])
            if mark is not None:
                return f"line {mark[0]}, column {mark[1]}"
        return ""

    def annotate(self, message: str, path: list[str]) -> str:
        """``message`` with the place of the field appended to its first line."""
        where = self.where(path)
        if not where:
            return message
        first, newline, rest = message.partition("\n")
        return f"{first} ({where}){newline}{rest}"


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the chosen member of a discriminated union (``open_loop``) or a validator
    # (``function-after[...]``) in the location; users think in field names, not in those.
    text = str(part)
    return text.startswith("function-") or text in _UNION_TAGS


_NAMES_A_FIELD = re.compile(r"^[a-z_][a-z_0-9]*(\.[a-z_0-9]+)*:")

_UNION_TAGS = {"open_loop", "closed_loop", *ARCHITECTURES, *get_args(PolicyKind)}


def spec_from_dict(
    data: Any,
    base_dir: Path | None = None,
    overrides: list[str] | None = None,
    marks: Mapping[tuple[str, ...], Mark] | None = None,
) -> ExperimentSpec:
    """Validate a spec given as data; raise SpecError with one line per problem.

    Args:
        data: The spec's fields, as parsed from YAML or JSON.
        base_dir: The directory that topology files are named relative to.
        overrides: ``path=value`` assignments (``--set``), applied before validation.
        marks: Where each field is in the file the data came from (line and column), to
            point at it in the errors.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"an experiment spec must be a mapping of fields (name, topology, mesh, workload, "
            f"duration, ...), got {_kind_of(data)}"
        )
    try:
        data = apply_overrides(data, overrides or [])
    except ValueError as error:
        raise SpecError(str(error)) from None
    places = None
    if marks is not None:
        places = Places(marks, [parse_assignment(text)[0] for text in overrides or []])
    try:
        return ExperimentSpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise SpecError(format_validation_error(error, places=places)) from None
    except (TopologyError, ProfileError) as error:
        raise SpecError(str(error)) from None


def _kind_of(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return f"the text {data[:40]!r}"
    return f"{data!r}"[:60]


def load_spec(path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Read and validate a YAML spec file; raise SpecError naming the file and the fields.

    The file is read with :func:`sim.yamlsafe.read_yaml_file`: anything but a plain UTF-8 YAML
    text file (a binary file, Latin-1 or UTF-16 text, a directory, YAML nested too deep,
    an alias bomb, a key given twice, a tag) is refused with its line and column.
    """
    path = Path(path)
    try:
        document = read_yaml_file(path)
    except YamlInputError as error:
        raise SpecError(f"{path}: {error}") from None
    if document.data is None:
        raise SpecError(
            f"{path}: the file holds no YAML document (it is empty, or only comments); an "
            "experiment spec is a mapping of fields (name, topology, mesh, workload, "
            "duration, ...)"
        )
    try:
        return spec_from_dict(
            document.data, base_dir=path.parent, overrides=overrides, marks=document.marks
        )
    except SpecError as error:
        raise SpecError(f"{path}:\n{error}") from None
