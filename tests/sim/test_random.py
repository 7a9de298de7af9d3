"""Tests of sim.random: named streams, stable hashing, replication seeds."""

from __future__ import annotations

import numpy as np
import pytest

from sim.random import RandomStreams, replication_seeds, stable_hash


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
    assert "a" in streams
    assert "c" not in streams
    assert streams.scopes() == ["a", "b"]
    assert streams.seed == 1


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
