"""Tests of sim.network: link classes and message delays."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from sim.network import LinkClass, NetworkPort, NetworkSpec, link_class


def test_defaults_are_parsed() -> None:
    spec = NetworkSpec()
    assert spec.same_node.mean() == pytest.approx(20e-6)
    assert spec.same_zone.mean() == pytest.approx(100e-6)
    assert spec.cross_zone.mean() == pytest.approx(500e-6)
    assert spec.bandwidth == pytest.approx(1.25e9)


@pytest.mark.parametrize(
    ("link", "propagation"),
    [(LinkClass.SAME_NODE, 10e-6), (LinkClass.SAME_ZONE, 200e-6), (LinkClass.CROSS_ZONE, 1e-3)],
)
def test_delay_is_propagation_plus_serialisation(link: LinkClass, propagation: float) -> None:
    spec = NetworkSpec(
        same_node="10us",
        same_zone="200us",
        cross_zone="1ms",
        bandwidth="1Gbps",  # type: ignore[arg-type]
    )
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    port = NetworkPort(spec, rng)
    size = 12_500
    assert port.delay(link, size) == propagation + size / 1.25e8
    assert port.delay(link, 0) == propagation
    assert port.rtt(link) == 2 * propagation
    assert rng.bit_generator.state == state  # constants never draw


def test_random_propagation_draws_from_port_stream() -> None:
    spec = NetworkSpec.model_validate({"same_zone": {"kind": "exponential", "mean": "100us"}})
    a = NetworkPort(spec, np.random.default_rng(4))
    b = NetworkPort(spec, np.random.default_rng(4))
    da = [a.delay(LinkClass.SAME_ZONE, 100) for _ in range(5)]
    db = [b.delay(LinkClass.SAME_ZONE, 100) for _ in range(5)]
    assert da == db
    assert len(set(da)) == 5
    assert all(d >= 100 / spec.bandwidth for d in da)


def test_invalid_network_spec_names_field() -> None:
    with pytest.raises(ValidationError, match="bandwidth"):
        NetworkSpec.model_validate({"bandwidth": "-1Gbps"})
    with pytest.raises(ValidationError, match="bandwidth"):
        NetworkSpec.model_validate({"bandwidth": 0})
    with pytest.raises(ValidationError, match="same_zone"):
        NetworkSpec.model_validate({"same_zone": "fast"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        NetworkSpec.model_validate({"latency": "1ms"})


def test_link_class() -> None:
    assert link_class("n1", "z1", "n1", "z1") is LinkClass.SAME_NODE
    assert link_class("n1", "z1", "n2", "z1") is LinkClass.SAME_ZONE
    assert link_class("n1", "z1", "n2", "z2") is LinkClass.CROSS_ZONE
    assert LinkClass("cross_zone") is LinkClass.CROSS_ZONE


def test_string_and_enum_links_share_one_sampler() -> None:
    spec = NetworkSpec.model_validate({"cross_zone": {"kind": "exponential", "mean": "1ms"}})
    mixed = NetworkPort(spec, np.random.default_rng(8))
    pure = NetworkPort(spec, np.random.default_rng(8))
    got = [mixed.delay(LinkClass.CROSS_ZONE, 0), mixed.delay("cross_zone", 0)]  # type: ignore[arg-type]
    assert got == [pure.delay(LinkClass.CROSS_ZONE, 0) for _ in range(2)]
