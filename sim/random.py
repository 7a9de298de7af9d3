"""Named, independent random streams derived from one root seed.

Every component draws from its own stream, keyed by its dotted scope
(``cluster.node-2.reviews-v1-0.sidecar``). A stream's seed is derived from the root seed and a
stable hash of the scope, so adding a component never changes another component's draws, and
two architectures compared in one experiment see the same arrivals (common random numbers).
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["RandomStreams", "replication_seeds", "stable_hash"]


def stable_hash(text: str) -> int:
    """Hash a string to a 64-bit unsigned integer, identically in every process and run.

    Python's built-in ``hash()`` is salted per process, so it must never seed anything.

    Args:
        text: The string to hash (UTF-8 encoded).

    Returns:
        An integer in ``[0, 2**64)``.
    """
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class RandomStreams:
    """A factory of independent PCG64 generators, one per scope, from a root seed.

    Args:
        seed: The root seed of the run (a non-negative integer).
    """

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    @property
    def seed(self) -> int:
        """The root seed."""
        return self._seed

    def stream(self, scope: str) -> np.random.Generator:
        """Return the generator of a scope, creating it on first use.

        The same seed and scope always give the same sequence of draws; the generator is cached,
        so two calls with one scope share one generator (and its position).

        Args:
            scope: The dotted scope of the component, e.g. ``"workload.arrivals"``.

        Returns:
            The scope's generator.
        """
        gen = self._streams.get(scope)
        if gen is None:
            seq = np.random.SeedSequence(entropy=self._seed, spawn_key=(stable_hash(scope),))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[scope] = gen
        return gen

    def __contains__(self, scope: object) -> bool:
        return scope in self._streams

    def scopes(self) -> list[str]:
        """Return the scopes whose streams have been created, sorted."""
        return sorted(self._streams)

    def __repr__(self) -> str:
        return f"RandomStreams(seed={self._seed}, scopes={len(self._streams)})"


def replication_seeds(seed: int, n: int) -> list[int]:
    """Spawn the root seeds of ``n`` replications from a root seed.

    Args:
        seed: The experiment's root seed (non-negative).
        n: Number of replications (non-negative).

    Returns:
        ``n`` distinct 64-bit seeds, identical for the same ``seed`` in every run; the first
        ``k`` seeds do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    children = np.random.SeedSequence(seed).spawn(n)
    return [int(child.generate_state(1, np.uint64)[0]) for child in children]
