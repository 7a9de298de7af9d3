"""A TLS handshake that fails past the picking hop (a waypoint's connection to the server's
ztunnel, before its first certificate is signed) is answered by that proxy, not retried as the
router's connect failure: the run goes on (it used to stop with an AttributeError)."""

from __future__ import annotations

from experiments.runner import build_simulation
from experiments.spec import spec_from_dict


def test_handshakes_failing_at_start_past_the_picker_are_answered_503():
    spec = spec_from_dict(
        {
            "topology": "bookinfo",
            "mesh": "istio-1.24-ambient",
            "workload": {"kind": "open_loop", "rate_rps": 500},
            "duration": "2s",
            "warmup": "0s",
        }
    )
    out = build_simulation(spec, 1).run()
    stats = out.workload
    assert stats.sent == stats.completed + stats.failed + stats.in_flight_now
    assert out.extras["data_plane"]["tls_failures"] > 0  # proxies without a certificate yet
    assert stats.completed > 0.9 * stats.sent
