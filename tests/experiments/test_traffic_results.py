"""Envoy's counters and per-service error codes, from a run to what users see: the result
(``RunResult.traffic``, ``ServiceResult.error_codes``), its JSON and the tables.

The retry counts are derived by hand from Istio's default retry policy (2 retries on 503,
``models.defaults``) and the shape of the run: one closed-loop connection paced at 2 rps,
whose every request is over long before the next one (so none straddles the warm-up or the
end, and the counts are exact).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from experiments.cli import app
from experiments.results import RunResult, TrafficResult
from experiments.runner import run_experiment
from experiments.spec import spec_from_dict
from experiments.tables import WIDTH, errors_table, run_tables, traffic_tables
from tests.conftest import single_node_topology

TITLE = "Traffic policy (Envoy's counters, after the warm-up)"


def service(name: str, steps: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "service_time": {"kind": "constant", "value": 0.001},
        "steps": steps,
        **extra,
    }


def failing_leaf_spec(replications: int = 1, mesh: Any = "istio-1.8") -> dict[str, Any]:
    """front calls leaf, which answers 503 to every request (its own misbehaviour).

    Requests leave at 0, 0.5, 1.0, ... s; one takes under 0.35 s (9 tries of 1 ms and
    Envoy's back-offs, each under 25 or 50 ms), so none is in flight at the warm-up's end
    (0.4 s) nor at the run's end (3.4 s): 6 requests measured, at 0.5 to 3.0 s.
    """
    return {
        "name": "failing-leaf",
        "topology": single_node_topology(
            [service("front", ["leaf"]), service("leaf", [], misbehaviour={"error_ratio": 1.0})],
            "front",
        ),
        "mesh": mesh,
        "workload": {"kind": "closed_loop", "connections": 1, "qps": 2},
        "duration": "3.4s",
        "warmup": "0.4s",
        "seed": 1,
        "replications": replications,
    }


def healthy_spec(mesh: Any) -> dict[str, Any]:
    return {
        "name": "healthy",
        "topology": single_node_topology(
            [service("front", ["leaf"]), service("leaf", [])], "front"
        ),
        "mesh": mesh,
        "workload": {"kind": "open_loop", "rate_rps": 200},
        "duration": "2s",
        "warmup": "0.5s",
        "seed": 2,
    }


REVIEWS_SUBSETS = {
    "kind": "DestinationRule",
    "metadata": {"name": "reviews"},
    "spec": {
        "host": "reviews",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "v3", "labels": {"version": "v3"}},
        ],
    },
}


def split(first: str, second: str) -> dict[str, Any]:
    """A VirtualService sending reviews' traffic 50/50 to two subsets."""
    return {
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {
            "hosts": ["reviews"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "reviews", "subset": first}, "weight": 50},
                        {"destination": {"host": "reviews", "subset": second}, "weight": 50},
                    ]
                }
            ],
        },
    }


def bookinfo_split_spec(policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "reviews-50-50",
        "topology": "bookinfo",
        "mesh": "istio-1.8",
        "workload": {"kind": "open_loop", "rate_rps": 100},
        "duration": "3s",
        "warmup": "0.5s",
        "seed": 5,
        "policies": [REVIEWS_SUBSETS, split("v1", "v3")] if policies is None else policies,
    }


# --- (a) no policy: nothing new -----------------------------------------------------------


def test_a_run_without_a_mesh_has_no_traffic_and_prints_no_section() -> None:
    result = run_experiment(spec_from_dict(healthy_spec("none")))
    assert result.end_to_end.requests > 0
    assert result.traffic is None
    assert traffic_tables(result.traffic) == ""
    assert TITLE not in run_tables(result)


def test_a_sidecar_run_without_policies_counts_requests_only_and_prints_no_section() -> None:
    result = run_experiment(spec_from_dict(healthy_spec("istio-1.8")))
    traffic = result.traffic
    assert traffic is not None
    # Every destination's only counter is its requests: what the service table shows.
    assert traffic.destinations == {
        "front": {"upstream_rq_total": traffic.destinations["front"]["upstream_rq_total"]},
        "leaf": {"upstream_rq_total": traffic.destinations["leaf"]["upstream_rq_total"]},
    }
    assert traffic.destinations["leaf"]["upstream_rq_total"] > 0
    assert not traffic.subsets and not traffic.ejections_active and not traffic.breakers
    assert all(set(c) == {"upstream_rq_total"} for c in traffic.proxies.values())
    assert traffic_tables(traffic) == ""
    assert errors_table(result) == ""
    printed = run_tables(result)
    assert TITLE not in printed and "Errors answered" not in printed
    # No error anywhere: no error codes.
    assert all(not s.error_codes for s in [result.end_to_end, *result.services.values()])


# --- (b) Istio's default retries against a failing leaf ----------------------------------


def test_b_default_retries_multiply_tries_and_count_exactly() -> None:
    result = run_experiment(spec_from_dict(failing_leaf_spec()))
    n = result.end_to_end.requests
    assert n == 6
    assert result.conservation.in_flight == 0
    # Every request fails after its retries: 503 URX (retries exhausted) end to end.
    assert result.status_codes == {"503": n}
    assert result.response_flags == {"URX": n}
    assert result.end_to_end.error_codes == {"503": n}

    # The load generator's sidecar tries front 3 times (1 + 2 retries on 503), and each of
    # front's tries makes front's sidecar try leaf 3 times: front receives 3n, leaf 9n.
    front, leaf = result.services["front"], result.services["leaf"]
    assert front.requests == 3 * n
    assert leaf.requests == 3 * front.requests == 9 * n
    assert leaf.error_codes == {"503": 9 * n}
    assert leaf.injected_errors == 9 * n and leaf.hangs == 0
    assert front.error_codes == {"503": 3 * n}
    assert front.injected_errors == 0

    traffic = result.traffic
    assert traffic is not None
    # At each destination: every request failed, was retried twice, then gave up.
    for host, requests in (("front", n), ("leaf", 3 * n)):
        counters = traffic.destinations[host]
        assert counters["upstream_rq_total"] == 3 * requests, host
        assert counters["upstream_rq_retry"] == 2 * requests, host
        assert counters["upstream_rq_retry_limit_exceeded"] == requests, host
        assert counters["upstream_rq_5xx"] == 3 * requests, host
    # The leaf's tries counted by its caller are the requests the leaf received.
    assert traffic.destinations["leaf"]["upstream_rq_total"] == leaf.requests
    assert traffic.proxies["node-0.front-0.sidecar"] == traffic.destinations["leaf"]

    # The tables print the counters that are not zero, and the errors by status code.
    printed = run_tables(result)
    section = printed[printed.index(TITLE) :]
    assert "upstream_rq_retry_limit_exceeded" in section
    assert "upstream_rq_pending_overflow" not in section  # zero: no column
    assert "rbac_denied" not in section
    errors = errors_table(result)
    assert "503=54" in errors and "URX=6" in errors
    assert errors in printed
    assert all(len(line) <= WIDTH for line in f"{errors}\n{traffic_tables(traffic)}".splitlines())


def test_b_json_carries_the_counters_and_error_codes(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(failing_leaf_spec()))
    out = CliRunner().invoke(app, ["run", str(path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["traffic"]["destinations"]["leaf"]["upstream_rq_retry"] == 36
    assert data["services"]["leaf"]["error_codes"] == {"503": 54}
    assert data["services"]["leaf"]["injected_errors"] == 54
    # And the tables (no --json) print the section.
    printed = CliRunner().invoke(app, ["run", str(path)])
    assert printed.exit_code == 0, printed.output
    assert TITLE in printed.stdout


# --- (c) a policy run: subsets ------------------------------------------------------------


def test_c_a_weighted_split_counts_per_subset_and_round_trips_through_json() -> None:
    result = run_experiment(spec_from_dict(bookinfo_split_spec()))
    traffic = result.traffic
    assert traffic is not None
    v1 = traffic.subsets["reviews/v1"]["upstream_rq_total"]
    v3 = traffic.subsets["reviews/v3"]["upstream_rq_total"]
    assert "reviews/v2" not in traffic.subsets  # no traffic: no row
    assert v1 + v3 == traffic.destinations["reviews"]["upstream_rq_total"]
    # 50/50 within sampling error: about 260 calls, sd of the v1 share about 8 calls.
    assert abs(v1 - v3) < 0.25 * (v1 + v3)
    assert result.services["reviews-v2"].requests == 0
    assert result.services["reviews-v1"].requests > 0 and result.services["reviews-v3"].requests > 0

    # JSON round trip: the typed traffic comes back equal, and the whole result dumps the
    # same again (RunResult itself is not ==: an unmeasured latency is NaN, never equal).
    restored = RunResult.model_validate_json(result.model_dump_json())
    assert restored.traffic == traffic
    assert isinstance(restored.traffic, TrafficResult)
    assert restored.services["reviews-v1"] == result.services["reviews-v1"]
    assert restored.model_dump_json() == result.model_dump_json()

    section = traffic_tables(traffic)
    assert section.startswith(TITLE)
    lines = section.splitlines()
    assert any(line.startswith("  reviews/v1 ") for line in lines)
    # Each subset right under its host.
    at = next(i for i, line in enumerate(lines) if line.startswith("reviews "))
    assert lines[at + 1].startswith("  reviews/v1") and lines[at + 2].startswith("  reviews/v3")


def test_c_a_proxys_own_answers_get_their_own_rows() -> None:
    abort = {
        "kind": "VirtualService",
        "metadata": {"name": "ratings"},
        "spec": {
            "hosts": ["ratings"],
            "http": [
                {
                    "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 100}}},
                    "route": [{"destination": {"host": "ratings"}}],
                }
            ],
        },
    }
    result = run_experiment(spec_from_dict(bookinfo_split_spec([REVIEWS_SUBSETS, abort])))
    traffic = result.traffic
    assert traffic is not None
    aborts = {
        p: c["fault_aborts_injected"]
        for p, c in traffic.proxies.items()
        if c.get("fault_aborts_injected")
    }
    # The abort is the caller's (reviews v2 and v3 call ratings): counted at their sidecars.
    assert aborts and all(".reviews-v" in scope for scope in aborts)
    # One abort per request those workloads answered, up to the few that straddle the end
    # of the warm-up (counted on one side of it and not on the other).
    answered = result.services["reviews-v2"].requests + result.services["reviews-v3"].requests
    assert abs(sum(aborts.values()) - answered) <= 3
    # Aborted before the upstream: ratings receives nothing; the callers answer 500.
    assert result.services["ratings"].requests == 0
    assert "ratings" not in traffic.destinations
    assert result.services["reviews-v3"].error_codes == {
        "500": result.services["reviews-v3"].requests
    }
    assert "none=" in errors_table(result)  # the caller's app answers 500 with no flag
    section = traffic_tables(traffic)
    assert "proxy (its own answers)" in section and "fault_aborts_injected" in section


# --- (d) replications ----------------------------------------------------------------------


def test_d_replications_sum_counters_and_error_codes() -> None:
    one = run_experiment(spec_from_dict(failing_leaf_spec()))
    two = run_experiment(spec_from_dict(failing_leaf_spec(replications=2)))
    assert one.traffic is not None and two.traffic is not None
    n = two.end_to_end.requests
    assert n == 12  # 6 per replication: the pacing, not the draws, decides
    # Summed: the same exact relations over both replications.
    assert two.traffic.destinations["leaf"] == {
        "upstream_rq_total": 9 * n,
        "upstream_rq_retry": 6 * n,
        "upstream_rq_retry_limit_exceeded": 3 * n,
        "upstream_rq_5xx": 9 * n,
    }
    assert two.traffic.destinations == {
        host: {name: 2 * c for name, c in counters.items()}
        for host, counters in one.traffic.destinations.items()
    }
    assert two.traffic.proxies == {
        scope: {name: 2 * c for name, c in counters.items()}
        for scope, counters in one.traffic.proxies.items()
    }
    assert two.services["leaf"].error_codes == {"503": 9 * n}
    assert two.services["leaf"].injected_errors == 9 * n


# --- the table layout -----------------------------------------------------------------------


def test_tables_wider_than_the_page_become_name_value_lists() -> None:
    names = [
        "upstream_rq_total",
        "upstream_rq_retry",
        "upstream_rq_retry_overflow",
        "upstream_rq_retry_limit_exceeded",
        "upstream_rq_pending_overflow",
        "upstream_rq_timeout",
    ]
    traffic = TrafficResult(
        destinations={"reviews": {name: i + 1 for i, name in enumerate(names)}},
        subsets={"reviews/v1": {"upstream_rq_total": 1}},
        ejections_active={"reviews": 2},
        breakers={"node-0.node_proxy/reviews": [(1.25, "tripped"), (11.25, "recovering")]},
    )
    section = traffic_tables(traffic)
    lines = section.splitlines()
    assert all(len(line) <= WIDTH for line in lines), section
    assert lines[0] == TITLE
    # One row, its counters as name=value, cut between counters.
    assert lines[1].startswith("reviews: upstream_rq_total=1  upstream_rq_retry=2")
    assert "upstream_rq_timeout=6" in section
    assert "  reviews/v1: upstream_rq_total=1" in section
    assert "Outlier ejections active at the end: reviews=2" in section
    assert "  node-0.node_proxy/reviews: 1.250 tripped, 11.250 recovering" in section


def test_ejections_or_breakers_alone_show_the_section() -> None:
    traffic = TrafficResult(
        destinations={"reviews": {"upstream_rq_total": 10}}, ejections_active={"reviews": 1}
    )
    section = traffic_tables(traffic)
    assert section.startswith(TITLE)
    assert "Outlier ejections active at the end: reviews=1" in section
