"""Istio's standard request metrics, as its proxies would report them during a run.

Collected only when asked (``Simulation(..., telemetry=IstioTelemetry(...))``): without it
``World.telemetry`` is None and the data plane pays one ``is None`` check where a response
is delivered and one where an app answers, nothing else.

What reports, as Istio does (Istio's "Istio Standard Metrics" page: ``istio_requests_total``,
a counter, and ``istio_request_duration_milliseconds``, a histogram, per request handled by
an Istio proxy):

* **sidecars** (``architecture: sidecar`` with Istio's control plane, ``istiod`` or ``split``):
  the caller's sidecar reports ``reporter="source"`` once per call, when the response is
  delivered to the calling app (after its retries: Envoy's outbound stream is the caller's
  request); the server's sidecar reports ``reporter="destination"`` once per request its app
  answers (each try of a retried call, as each reaches an inbound sidecar).
* **waypoints** (ambient): one report per call that went through a waypoint, with
  ``reporter="waypoint"`` (what Istio's waypoints write since ambient mode's telemetry: Kiali
  maps it onto the source and destination reporters).
* **ztunnel** reports only ``istio_tcp_*`` (L4): left out; an ambient call without a
  waypoint is not in the file.
* Linkerd (a sidecar mesh without Istio's control plane), Traefik Mesh (``per_node``),
  proxyless gRPC and no mesh do not emit Istio's metrics: nothing is collected for them.

Durations (milliseconds, Istio's unit): for ``source`` and ``waypoint``, from when the
calling app made the call (``Request.start_s``) to when its response was delivered back to
it; for ``destination``, from the request's arrival at the app to its answer (without the
inbound sidecar's own request and response work, a fraction of a millisecond). A request is
counted when its call started after the warm-up (``source``, ``waypoint``) or reached the app
after it (``destination``), as the run's own statistics count.

Not reported: a request answered by the inbound sidecar itself (an authorization deny there)
has no ``destination`` report, since the app never answers it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = [
    "DURATION_BUCKETS_MS",
    "IstioTelemetry",
    "SeriesKey",
    "istio_reporting",
]

DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
"""The ``le`` bounds of ``istio_request_duration_milliseconds``: Envoy's default histogram
buckets (``HistogramSettingsImpl::defaultBuckets``, source/common/stats/histogram_impl.cc),
which Istio's stats filter keeps unless ``sidecar.istio.io/statsHistogramBuckets`` says
otherwise."""

SeriesKey = tuple[str, str, str, str, str, str, str]
"""(reporter, source_workload, destination_workload, destination_service, response_code,
response_flags, connection_security_policy)."""

UNKNOWN = "unknown"
ISTIO_CONTROL_PLANES = ("istiod", "split")


def istio_reporting(mesh_spec: Any) -> str | None:
    """Which Istio reporters a mesh's proxies have: ``sidecar``, ``ambient`` or None.

    Istio's proxies are recognised by their control plane (``istiod``, or Istio 1.1's
    ``split`` one): a sidecar mesh without it is Linkerd's (or a static Envoy mesh), whose
    proxies do not write Istio's metrics.
    """
    architecture = getattr(mesh_spec, "architecture", None)
    plane = getattr(mesh_spec, "control_plane", None)
    kind = getattr(plane, "kind", None)
    if architecture == "sidecar" and kind in ISTIO_CONTROL_PLANES:
        return "sidecar"
    if architecture == "ambient":  # Istio's own architecture, whatever its control plane
        return "ambient"
    return None


class _Series:
    """One series' count, sum (ms) and histogram buckets (not cumulative)."""

    __slots__ = ("count", "sum_ms", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.sum_ms = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)  # the last is +Inf only


class IstioTelemetry:
    """Collects Istio's request metrics during one run (see the module docstring).

    Requests that started before the run's warm-up ends are not counted (the warm-up is
    the world's, taken by :meth:`attach`).

    Args:
        window_s: with a value, the counts are also kept per window of this width from the
            end of the warm-up, for one scrape per window; None for one scrape at the end.
    """

    def __init__(self, window_s: float | None = None) -> None:
        if window_s is not None and not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.warmup_s = 0.0
        self.window_s = window_s
        self.mode: str | None = None  # set by attach: "sidecar", "ambient" or None
        self.mtls = False
        # (window index, series key) -> its figures; window 0 only without windows.
        self.series: dict[tuple[int, SeriesKey], _Series] = {}
        self._fqdn: dict[str, str] = {}
        self._namespaces: dict[str, str] = {}

    # --- set-up ------------------------------------------------------------------------------

    def attach(self, world: Any, mesh: Any) -> bool:
        """Bind to a built world and mesh; True if the mesh's proxies report Istio's
        metrics (then the world's hot path calls this collector), False otherwise."""
        self.mode = istio_reporting(mesh.spec)
        self.warmup_s = world.warmup_s
        self.mtls = getattr(mesh.spec, "mtls_mode", "DISABLE") != "DISABLE"
        for spec in world.topology.call_graph.services:
            self._namespaces.setdefault(spec.host_name, spec.namespace)
        return self.mode is not None

    def destination_service(self, host: str) -> str:
        """Istio's ``destination_service``: the host's FQDN (``reviews.default.svc.cluster.local``)."""
        found = self._fqdn.get(host)
        if found is None:
            if "." in host:  # already qualified
                found = host
            else:
                namespace = self._namespaces.get(host, "default")
                found = f"{host}.{namespace}.svc.cluster.local"
            self._fqdn[host] = found
        return found

    # --- on the hot path (only when collecting) ------------------------------------------------

    def delivered(self, exchange: Any, now: float) -> None:
        """A call's response reached the calling app (``Exchange._deliver``): the source
        sidecar's report, or the waypoint's when one was on the path."""
        request = exchange.request
        start = request.start_s
        if start < self.warmup_s:
            return
        if self.mode == "sidecar":
            reporter = "source"
            security = UNKNOWN  # Istio's client-side report does not know the peer's policy
        else:
            hops = exchange.hops
            if hops[exchange.picker].proxy.kind != "waypoint":
                return  # ztunnel only: L4, no request metrics
            reporter = "waypoint"
            security = "mutual_tls" if self.mtls else "none"
        response = exchange.response
        dst = exchange.dst
        key = (
            reporter,
            exchange.src.workload,
            dst.workload if dst is not None else UNKNOWN,
            self.destination_service(exchange.host),
            str(response.status),
            response.flags,
            security,
        )
        self._observe(key, now, (now - start) * 1e3)

    def answered(self, visit: Any, response: Any, now: float) -> None:
        """An app answered a request that came through an inbound sidecar
        (``Visit._answer``): the destination sidecar's report."""
        if self.mode != "sidecar":
            return
        arrival = visit.res[0]
        if arrival < self.warmup_s:
            return
        parent = visit.parent
        src = getattr(parent, "src", None)
        key = (
            "destination",
            src.workload if src is not None else UNKNOWN,
            visit.pod.workload,
            self.destination_service(visit.pod.host),
            str(response.status),
            response.flags,
            "mutual_tls" if self.mtls else "none",
        )
        self._observe(key, now, (now - arrival) * 1e3)

    def _observe(self, key: SeriesKey, now: float, duration_ms: float) -> None:
        window = 0
        if self.window_s is not None:
            window = max(0, int((now - self.warmup_s) / self.window_s))
        found = self.series.get((window, key))
        if found is None:
            found = self.series[(window, key)] = _Series()
        found.count += 1
        found.sum_ms += duration_ms
        # Prometheus' le is "less than or equal": bisect_left puts a value on a bound in it.
        found.buckets[bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1

    # --- reading -------------------------------------------------------------------------------

    def windows(self) -> int:
        """How many windows have counts (1 without windows, 0 when nothing was counted)."""
        return max((w for w, _ in self.series), default=-1) + 1

    def merge(self, other: IstioTelemetry) -> None:
        """Add ``other``'s counts (another replication) to this collector's."""
        for (window, key), theirs in other.series.items():
            mine = self.series.get((window, key))
            if mine is None:
                mine = self.series[(window, key)] = _Series()
            mine.count += theirs.count
            mine.sum_ms += theirs.sum_ms
            mine.buckets = [a + b for a, b in zip(mine.buckets, theirs.buckets, strict=True)]
        if self.mode is None:
            self.mode = other.mode
