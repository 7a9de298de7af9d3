"""Tests of sim.random: named streams, stable hashing, replication seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sim.distributions import ExponentialDist
from sim.random import LazyGenerator, RandomStreams, SeededGenerator, replication_seeds, stable_hash


def _eager(seed: int, scope: str) -> np.random.Generator:
    """The generator a stream was before streams were lazy: seeded at once, same derivation."""
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(stable_hash(scope),))
    return np.random.Generator(np.random.PCG64(seq))


def test_stable_hash_is_fixed_and_64_bit() -> None:
    h = stable_hash("cluster.node-2.reviews-v1-0.sidecar")
    assert h == stable_hash("cluster.node-2.reviews-v1-0.sidecar")
    assert 0 <= h < 2**64
    assert stable_hash("a") != stable_hash("b")


def test_stable_hash_matches_blake2b_digest() -> None:
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"workload", digest_size=8).digest(), "little")
    assert stable_hash("workload") == expected


def test_same_seed_and_scope_give_same_draws() -> None:
    a = RandomStreams(42).stream("workload.arrivals").random(100)
    b = RandomStreams(42).stream("workload.arrivals").random(100)
    np.testing.assert_array_equal(a, b)


def test_different_scope_or_seed_give_different_draws() -> None:
    base = RandomStreams(42).stream("workload.arrivals").random(100)
    other_scope = RandomStreams(42).stream("workload.sizes").random(100)
    other_seed = RandomStreams(43).stream("workload.arrivals").random(100)
    assert not np.array_equal(base, other_scope)
    assert not np.array_equal(base, other_seed)


def test_adding_a_scope_leaves_other_draws_unchanged() -> None:
    alone = RandomStreams(7)
    a1 = alone.stream("svc.a").random(50)

    crowded = RandomStreams(7)
    crowded.stream("svc.new").random(1000)
    a2 = crowded.stream("svc.a").random(50)
    crowded.stream("svc.other").random(10)
    np.testing.assert_array_equal(a1, a2)


def test_stream_is_cached_and_scopes_listed() -> None:
    streams = RandomStreams(1)
    assert streams.stream("b") is streams.stream("b")
    streams.stream("a")
    # Requested streams are listed, whether or not they have been drawn from.
    assert "a" in streams
    assert "c" not in streams
    assert streams.scopes() == ["a", "b"]
    assert streams.seeded_scopes() == []
    streams.stream("b").random()
    assert streams.seeded_scopes() == ["b"]
    assert streams.scopes() == ["a", "b"]
    assert streams.seed == 1


def test_stream_is_seeded_on_first_draw_only() -> None:
    stream = RandomStreams(5).stream("pod-0.net")
    assert isinstance(stream, LazyGenerator)
    assert isinstance(stream, np.random.Generator)
    assert not stream.seeded
    stream.normal()
    assert type(stream) is SeededGenerator
    assert stream.seeded
    assert stream.scope == "pod-0.net"
    # Once seeded, draws go straight to numpy's methods: the laziness costs nothing per draw.
    assert type(stream).normal is np.random.Generator.normal


@pytest.mark.parametrize(
    "draw",
    [
        lambda g: g.random(7),
        lambda g: g.exponential(2.0, 7),
        lambda g: g.uniform(0.0, 3.0, 7),
        lambda g: g.integers(0, 100, 7),
        lambda g: g.choice(50, 7),
        lambda g: g.permutation(9),
        lambda g: g.spawn(1)[0].random(3),
        lambda g: g.bit_generator.random_raw(3),
        lambda g: ExponentialDist(mean=0.5).sample_n(g, 1000),
    ],
)
def test_lazy_stream_draws_exactly_what_an_eager_one_did(
    draw: Callable[[np.random.Generator], Any],
) -> None:
    lazy, eager = RandomStreams(42).stream("svc.a"), _eager(42, "svc.a")
    np.testing.assert_array_equal(draw(lazy), draw(eager))
    # and the next draws too: the first call seeded it once, it does not reseed.
    np.testing.assert_array_equal(lazy.random(5), eager.random(5))


def test_batched_sampler_on_a_lazy_stream_matches_eager_draws() -> None:
    dist = ExponentialDist(mean=0.002)
    lazy = dist.sampler(RandomStreams(9).stream("s0-0.app"), batch=64)
    eager = dist.sampler(_eager(9, "s0-0.app"), batch=64)
    assert [lazy() for _ in range(200)] == [eager() for _ in range(200)]


def test_every_generator_method_seeds_first() -> None:
    # An unseeded LazyGenerator has no numpy state: every public method and attribute of
    # Generator must be overridden to seed first, or it would reach numpy's C code unseeded.
    for name in dir(np.random.Generator):
        if not name.startswith("_"):
            assert name in vars(LazyGenerator), name


def test_lazy_stream_pickles_as_its_draws() -> None:
    import pickle

    restored = pickle.loads(pickle.dumps(RandomStreams(3).stream("c")))
    np.testing.assert_array_equal(restored.random(4), _eager(3, "c").random(4))


def test_negative_seed_rejected() -> None:
    with pytest.raises(ValueError, match="seed must be >= 0"):
        RandomStreams(-1)


def test_replication_seeds_stable_and_distinct() -> None:
    seeds = replication_seeds(2024, 10)
    assert seeds == replication_seeds(2024, 10)
    assert len(set(seeds)) == 10
    assert all(isinstance(s, int) and 0 <= s < 2**64 for s in seeds)
    assert replication_seeds(2024, 3) == seeds[:3]
    assert replication_seeds(2025, 3) != seeds[:3]
    assert replication_seeds(1, 0) == []
