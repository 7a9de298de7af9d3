"""``meshsim run --out``: the files an operator would see, checked against their formats.

metrics.prom is parsed by prometheus-client's own text parser; traces.json is checked for
the fields Jaeger's OTLP receiver reads and for consistent parent links; fortio.json for
fortio's keys (``periodic.RunnerResults``, ``stats.HistogramData``) and units.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from experiments.cli import app
from experiments.exports import (
    FORTIO_PERCENTILES,
    ExportedRun,
    fortio_result,
    go_duration,
    otlp_traces,
    prometheus_text,
    run_with_exports,
    write_exports,
)
from experiments.runner import build_simulation
from experiments.spec import spec_from_dict
from models.telemetry import DURATION_BUCKETS_MS

cli = CliRunner()

# A two-service chain under Istio 1.8's sidecars, driven by fortio-style connections; the
# leaf fails one request in ten (500, which Istio does not retry), so that codes and flags are not all 200 / "-".
BASE = {
    "name": "exports",
    "topology": {
        "cluster": {"nodes": [{"name": "node-0"}, {"name": "node-1"}]},
        "call_graph": {
            "entry": "front",
            "services": [
                {
                    "name": "front",
                    "workers": 8,
                    "service_time": {"kind": "exponential", "mean": "200us"},
                    "steps": [{"calls": [{"service": "leaf"}]}],
                },
                {
                    "name": "leaf",
                    "replicas": 2,
                    "workers": 8,
                    "service_time": {"kind": "exponential", "mean": "300us"},
                    "misbehaviour": {"error_ratio": 0.1, "error_status": 500},
                },
            ],
        },
    },
    "mesh": "istio-1.8",
    "workload": {"kind": "closed_loop", "connections": 4, "qps": 400},
    "duration": "3s",
    "warmup": "0.5s",
    "seed": 7,
    "replications": 2,
    "trace_every": 50,
}


def spec(**changes: object):
    data = json.loads(json.dumps(BASE))
    data.update(changes)
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def sidecar_run() -> ExportedRun:
    return run_with_exports(spec())


def samples(text: str) -> dict[str, list]:
    """Every sample of the exposition, by sample name, as prometheus-client parses it."""
    found: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append(sample)
    return found


# --- metrics.prom ------------------------------------------------------------------------------


def test_prometheus_file_parses_and_counts_what_the_run_measured(sidecar_run, tmp_path):
    write_exports(sidecar_run, tmp_path)
    text = (tmp_path / "metrics.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus-client strips a counter's _total from the family name.
    assert families["istio_requests"].type == "counter"
    assert families["istio_request_duration_milliseconds"].type == "histogram"
    found = samples(text)
    result = sidecar_run.result
    loadgen = [
        s
        for s in found["istio_requests_total"]
        if s.labels["reporter"] == "source" and s.labels["source_workload"] == "loadgen"
    ]
    assert sum(s.value for s in loadgen) == result.end_to_end.requests > 0
    by_code: dict[str, float] = defaultdict(float)
    for s in loadgen:
        by_code[s.labels["response_code"]] += s.value
    assert by_code == {code: float(n) for code, n in result.status_codes.items()}
    assert "500" in by_code  # the leaf's errors reach the load generator
    # Istio's labels, its FQDN for the service, and who reports with which policy.
    for s in found["istio_requests_total"]:
        assert set(s.labels) == {
            "reporter",
            "source_workload",
            "destination_workload",
            "destination_service",
            "response_code",
            "response_flags",
            "connection_security_policy",
        }
        assert s.labels["destination_service"] in (
            "front.default.svc.cluster.local",
            "leaf.default.svc.cluster.local",
        )
        expected = "unknown" if s.labels["reporter"] == "source" else "mutual_tls"
        assert s.labels["connection_security_policy"] == expected
    # The leaf's app answered every request its sidecar reported.
    leaf = sum(
        s.value
        for s in found["istio_requests_total"]
        if s.labels["reporter"] == "destination" and s.labels["destination_workload"] == "leaf"
    )
    assert leaf == result.services["leaf"].requests


def test_prometheus_histogram_has_istios_buckets_and_agrees_with_the_counter(sidecar_run):
    found = samples(prometheus_text(sidecar_run))
    counts = {_key(s): s.value for s in found["istio_requests_total"]}
    hist_counts = {_key(s): s.value for s in found["istio_request_duration_milliseconds_count"]}
    assert counts == hist_counts
    buckets: dict[tuple, list] = defaultdict(list)
    for s in found["istio_request_duration_milliseconds_bucket"]:
        labels = dict(s.labels)
        le = labels.pop("le")
        buckets[tuple(sorted(labels.items()))].append((le, s.value))
    expected_le = [*(float(b) for b in DURATION_BUCKETS_MS), float("inf")]
    for key, rows in buckets.items():
        assert [float(le) for le, _ in rows] == expected_le
        values = [v for _, v in rows]
        assert values == sorted(values)  # cumulative
        assert values[-1] == hist_counts[key]
    # Durations: the source reporter's mean is close to the load generator's mean latency.
    result = sidecar_run.result
    loadgen_sum = sum(
        s.value
        for s in found["istio_request_duration_milliseconds_sum"]
        if s.labels["reporter"] == "source" and s.labels["source_workload"] == "loadgen"
    )
    assert loadgen_sum / result.end_to_end.requests == pytest.approx(
        result.end_to_end.latency.mean_ms, rel=1e-6
    )


def _key(sample) -> tuple:
    return tuple(sorted(sample.labels.items()))


def test_prometheus_windows_are_timestamped_scrapes_ending_at_the_total(sidecar_run):
    windowed = run_with_exports(spec(), scrape_every_s=0.5)
    found = samples(prometheus_text(windowed))
    last: dict[tuple, tuple[float, float]] = {}
    stamps = set()
    for s in found["istio_requests_total"]:
        assert s.timestamp is not None
        stamps.add(float(s.timestamp))
        seen = last.get(_key(s))
        if seen is not None:
            assert s.timestamp > seen[0] and s.value >= seen[1]  # counters only grow
        last[_key(s)] = (float(s.timestamp), s.value)
    # Windows end every 0.5 s after the 0.5 s warm-up, up to the end of the run (3 s).
    assert sorted(stamps) == [1.0, 1.5, 2.0, 2.5, 3.0]
    end = {_key(s): s.value for s in samples(prometheus_text(sidecar_run))["istio_requests_total"]}
    assert {k: v for k, (_, v) in last.items()} == end


@pytest.mark.parametrize("profile", ["linkerd2", "maesh", "none", "proxyless-grpc"])
def test_meshes_without_istio_telemetry_write_no_samples(profile, tmp_path):
    data = json.loads(json.dumps(BASE))  # a deep copy: BASE stays as it is
    data.update(replications=1, duration="1s", trace_every=0)
    if profile == "proxyless-grpc":
        for service in data["topology"]["call_graph"]["services"]:
            service["protocol"] = "grpc"
    data["mesh"] = profile
    run = run_with_exports(spec_from_dict(data))
    assert run.telemetry is None and run.outputs[0].telemetry is None
    write_exports(run, tmp_path)
    text = (tmp_path / "metrics.prom").read_text()
    assert all(line.startswith("#") for line in text.splitlines())
    assert "do not emit Istio's metrics" in text
    assert list(text_string_to_metric_families(text)) == []


def test_ambient_reports_at_waypoints_only():
    with_waypoint = {"profile": "istio-ambient", "overrides": {"waypoints": ["leaf"]}}
    run = run_with_exports(spec(mesh=with_waypoint, replications=1, trace_every=0))
    text = prometheus_text(run)
    found = samples(text)
    reporters = {s.labels["reporter"] for s in found["istio_requests_total"]}
    assert reporters == {"waypoint"}
    services = {s.labels["destination_service"] for s in found["istio_requests_total"]}
    assert services == {"leaf.default.svc.cluster.local"}  # front has no waypoint
    assert "istio_tcp_" in text  # the comment says ztunnel's L4 metrics are left out
    without = run_with_exports(spec(mesh="istio-ambient", replications=1, trace_every=0))
    assert samples(prometheus_text(without))["istio_requests_total"] == []


# --- traces.json -------------------------------------------------------------------------------


def test_otlp_traces_have_jaegers_fields_and_consistent_parents(sidecar_run, tmp_path):
    write_exports(sidecar_run, tmp_path)
    data = json.loads((tmp_path / "traces.json").read_text())
    spans_by_trace: dict[str, list[dict]] = defaultdict(list)
    for resource in data["resourceSpans"]:
        names = [a for a in resource["resource"]["attributes"] if a["key"] == "service.name"]
        assert len(names) == 1 and names[0]["value"]["stringValue"]
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
                assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
                assert span["parentSpanId"] == "" or re.fullmatch(
                    r"[0-9a-f]{16}", span["parentSpanId"]
                )
                assert span["name"] and span["kind"] in (1, 2, 3, 4, 5)
                start, end = span["startTimeUnixNano"], span["endTimeUnixNano"]
                assert isinstance(start, str) and isinstance(end, str)
                assert 0 <= int(start) <= int(end) <= 3 * 10**9  # within the 3 s run
                assert span["status"]["code"] in (0, 1, 2)
                spans_by_trace[span["traceId"]].append(span)
    traced = sum(len(out.recorder.traces) for out in sidecar_run.outputs)
    assert len(spans_by_trace) == traced > 0
    for spans in spans_by_trace.values():
        ids = {s["spanId"] for s in spans}
        assert len(ids) == len(spans)  # unique within the trace
        roots = [s for s in spans if s["parentSpanId"] == ""]
        assert len(roots) == 1
        for span in spans:
            assert span["parentSpanId"] == "" or span["parentSpanId"] in ids
        root = roots[0]
        assert all(int(s["startTimeUnixNano"]) >= int(root["startTimeUnixNano"]) for s in spans)
        assert all(int(s["endTimeUnixNano"]) <= int(root["endTimeUnixNano"]) for s in spans)


def test_otlp_ids_are_deterministic_and_depend_on_the_seed(sidecar_run):
    again = run_with_exports(spec())
    first = otlp_traces(sidecar_run.outputs, sidecar_run.seeds)
    assert otlp_traces(again.outputs, again.seeds) == first
    other = run_with_exports(spec(seed=8))
    ids = {
        s["traceId"] for r in first["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]
    }
    theirs = otlp_traces(other.outputs, other.seeds)
    other_ids = {
        s["traceId"] for r in theirs["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]
    }
    assert ids and other_ids and not ids & other_ids


# --- fortio.json -------------------------------------------------------------------------------


def test_fortio_json_has_fortios_keys_and_units(sidecar_run, tmp_path):
    write_exports(sidecar_run, tmp_path)
    data = json.loads((tmp_path / "fortio.json").read_text())
    result = sidecar_run.result
    for key in (
        "RunType",
        "Labels",
        "StartTime",
        "RequestedQPS",
        "RequestedDuration",
        "ActualQPS",
        "ActualDuration",
        "NumThreads",
        "Version",
        "DurationHistogram",
        "RetCodes",
    ):
        assert key in data
    assert data["RequestedQPS"] == "400"
    assert data["RequestedDuration"] == "2.5s"
    assert data["NumThreads"] == 4
    assert data["ActualDuration"] == round(2.5 * 2 * 1e9)  # nanoseconds, both replications
    histogram = data["DurationHistogram"]
    assert histogram["Count"] == result.end_to_end.requests
    assert sum(data["RetCodes"].values()) == histogram["Count"]
    assert data["RetCodes"]["500"] > 0 and all(k.isdigit() for k in data["RetCodes"])
    assert data["ActualQPS"] == pytest.approx(result.end_to_end.throughput_rps)
    # Seconds, not milliseconds.
    assert histogram["Avg"] == pytest.approx(result.end_to_end.latency.mean_ms / 1e3)
    assert histogram["Min"] <= histogram["Avg"] <= histogram["Max"] < 1.0
    assert histogram["Sum"] == pytest.approx(histogram["Avg"] * histogram["Count"])
    assert [p["Percentile"] for p in histogram["Percentiles"]] == list(FORTIO_PERCENTILES)
    p50 = histogram["Percentiles"][0]["Value"]
    assert p50 == pytest.approx(result.end_to_end.latency.p50_ms / 1e3)
    assert sum(b["Count"] for b in histogram["Data"]) == histogram["Count"]
    assert histogram["Data"][-1]["Percent"] == pytest.approx(100.0)
    assert all(b["Start"] <= b["End"] for b in histogram["Data"])
    assert 0 < histogram["StdDev"] < histogram["Max"]


def test_fortio_requested_qps_is_max_without_pacing(sidecar_run):
    unpaced = spec(workload={"kind": "closed_loop", "connections": 2, "qps": 0})
    assert fortio_result(sidecar_run.result, unpaced)["RequestedQPS"] == "max"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30s"), (90, "1m30s"), (3600, "1h0m0s"), (1.5, "1.5s"), (0.5, "500ms"), (0, "0s")],
)
def test_go_duration_writes_as_go_does(seconds, text):
    assert go_duration(seconds) == text


# --- the command -------------------------------------------------------------------------------


def _write_spec(tmp_path: Path, **changes: object) -> Path:
    data = json.loads(json.dumps(BASE))
    data.update({"replications": 1, "duration": "1s", **changes})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_out_writes_the_files_and_says_what(tmp_path):
    out = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_write_spec(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "fortio.json",
        "metrics.prom",
        "result.json",
        "traces.json",
    ]
    assert "metrics.prom" in result.output and "fortio.json" in result.output
    saved = json.loads((out / "result.json").read_text())
    assert saved["name"] == "exports"


def test_open_loop_writes_no_fortio_json_and_says_so(tmp_path):
    out = tmp_path / "out"
    path = _write_spec(tmp_path, workload={"kind": "open_loop", "rate_rps": 200})
    result = cli.invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "fortio.json").exists()
    lines = [line for line in result.output.splitlines() if "fortio.json" in line]
    assert len(lines) == 1 and "open-loop" in lines[0]


def test_run_without_out_writes_nothing_and_collects_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write_spec(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = cli.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert sorted(tmp_path.iterdir()) == before
    simulation = build_simulation(spec())
    assert simulation.world.telemetry is None and simulation.telemetry is None
    assert simulation.run().telemetry is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scrape-every", "1s"], "--scrape-every needs --out"),
        (["--out", "OUT", "--scrape-every", "0s"], "--scrape-every must be > 0"),
        (["--out", "OUT", "--scrape-every", "soon"], "--scrape-every"),
    ],
)
def test_bad_export_options_are_named(tmp_path, args, message):
    path = _write_spec(tmp_path)
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    result = cli.invoke(app, ["run", str(path), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.stderr


def test_out_with_a_sweep_is_refused(tmp_path):
    path = _write_spec(tmp_path, sweep={"workload.qps": [100, 200]})
    result = cli.invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "sweep" in result.stderr


# --- timeseries.csv hook -----------------------------------------------------------------------


def test_timeseries_csv_has_a_row_per_window_series_and_metric_summing_to_the_totals(
    sidecar_run, tmp_path
):
    run = run_with_exports(spec(timeseries={"window": "250ms"}))
    write_exports(run, tmp_path)
    with (tmp_path / "timeseries.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["window_start_s", "series", "metric", "value"]
    measured = [r for r in rows if r["series"] == "end_to_end" and r["metric"] == "measured"]
    series = run.result.timeseries
    assert series is not None
    assert len(measured) == len(series.starts_s)
    assert sum(int(r["value"]) for r in measured) == run.result.end_to_end.requests
    write_exports(sidecar_run, tmp_path / "plain")
    assert not (tmp_path / "plain" / "timeseries.csv").exists()


def test_the_run_report_plots_the_windows_with_the_faults_shaded(tmp_path):
    faulted = spec(
        timeseries={"window": "250ms"},
        faults=[
            {
                "kind": "pod_crash",
                "start": 0.5,
                "target": {"workload": "leaf"},
                "restart_delay": 0.5,
            }
        ],
    )
    run = run_with_exports(faulted)
    write_exports(run, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 'src="https://cdn.plot.ly' not in page  # plotly.js inline: it opens offline
    assert "0 pod_crash" in page  # the fault's shaded span is labelled
    assert page.count("<script") >= 1
    # Without a time series, no report.
    write_exports(run_with_exports(spec()), tmp_path / "plain")
    assert not (tmp_path / "plain" / "report.html").exists()
