"""``hrw``: rendezvous (highest random weight) hashing of buckets to live nodes, for comparison.

Each bucket not held by a suspect node belongs to the live node with the highest score
``w_n / -ln(u(n, b))``, where ``u(n, b)`` in ``(0, 1)`` comes from the first 8 bytes of
``blake2b(node_key + "/" + bucket_id)`` (weighted rendezvous hashing, Schindelhauer and Schomaker
2005; with equal weights it is simply the largest hash). The hash is stable across processes and
Python versions (never Python's ``hash()``), so every planner agrees on the owner.

HRW ignores the current assignment: when the live set changes, only the buckets whose winner
changed move, which is close to minimal in expectation, but the counts are only balanced on
average (a binomial spread), and after any other strategy's assignment nearly everything moves.
It costs ``O(B' * N)`` hash evaluations, about a microsecond each in CPython.

Pins: a pinned bucket stays on its node and is not hashed; HRW does not count holdings, so pins
change nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from hashlib import blake2b

from allot.planner.model import Move
from allot.planner.problem import Problem
from allot.planner.strategies.base import Strategy

_SCALE = 2.0**-52


class HrwStrategy(Strategy):
    """Weighted rendezvous hashing with blake2b; see the module doc."""

    name = "hrw"
    summary = "rendezvous hashing (weighted, blake2b): stable owners, balanced only on average"

    def propose(self, problem: Problem) -> list[Move]:
        """Move every non-suspect bucket to its HRW winner: orphans first, then by bucket id."""
        owner = {bucket: key for key, buckets in problem.held.items() for bucket in buckets}
        winner = _winner_function(problem.live, problem.weights)
        moves = [
            Move(bucket, problem.origin.get(bucket), winner(bucket)) for bucket in problem.orphans
        ]
        for bucket in sorted(owner):
            best = winner(bucket)
            if best != owner[bucket]:
                moves.append(Move(bucket, owner[bucket], best))
        return moves


def owner_of(bucket: int, weights: Mapping[str, float]) -> str:
    """The HRW owner of ``bucket`` among the nodes of ``weights`` (keys to weights, not empty)."""
    return _winner_function(tuple(sorted(weights)), weights)(bucket)


def _winner_function(live: tuple[str, ...], weights: Mapping[str, float]) -> Callable[[int], str]:
    """A function bucket -> winning node of ``live``, specialised for equal or unequal weights."""
    prefixes = [key.encode() + b"/" for key in live]
    factors = [weights[key] for key in live]
    if len(set(factors)) == 1:
        index = range(len(live))

        def equal(bucket: int) -> str:
            suffix = str(bucket).encode()
            scores = [blake2b(prefix + suffix, digest_size=8).digest() for prefix in prefixes]
            return live[max(index, key=scores.__getitem__)]

        return equal
    pairs = list(zip(prefixes, factors, strict=True))
    return lambda bucket: _best(bucket, pairs, live)


def _best(bucket: int, pairs: list[tuple[bytes, float]], live: tuple[str, ...]) -> str:
    """The node with the highest weighted score ``w / -ln(u)`` for ``bucket``."""
    suffix = str(bucket).encode()
    best_index, best_score = 0, -1.0
    for index, (prefix, weight) in enumerate(pairs):
        digest = blake2b(prefix + suffix, digest_size=8).digest()
        unit = ((int.from_bytes(digest, "big") >> 12) + 0.5) * _SCALE  # 52 bits, in (0, 1)
        score = weight / -math.log(unit)
        if score > best_score:
            best_index, best_score = index, score
    return live[best_index]
