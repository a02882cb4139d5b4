"""From LSH band buckets to groups of near-duplicates, one bounded step at a time.

1. ``verify_bucket``: the documents that share one band key (sorted by id) are compared
   against *centres* only, never all pairs: the first document is a centre, every other one
   whose estimated Jaccard similarity to it reaches the threshold is linked to it; the first
   unlinked document becomes the next centre, and so on, for at most ``max_centres`` centres.
   A bucket of ten thousand copies of one boilerplate page costs ten thousand comparisons, not
   fifty million, and its edges form a star around the smallest id.
2. Connected components of the verified edges with the alternating *large-star* /
   *small-star* steps of Kiveris et al. (2014, "Connected Components in MapReduce and
   Beyond"). Each step looks at one node and its neighbours (one group of a GroupByKey), so
   memory is bounded by a node's degree; after enough rounds every component is a star
   around its smallest node. Edges are ``(hi, lo)`` pairs with ``hi > lo``.
3. ``label``: every node that has a smaller neighbour is dropped in favour of the smallest of
   them. Once converged, that is the component's smallest id; if a component needed more
   rounds than were run, labels still point to smaller nodes of the same component, so every
   dropped document leads to a kept one: more documents may be kept, never fewer.

Nodes are ``(document id, batch key, exact digest)`` tuples, ordered by document id (ids are
unique), the same order exact de-duplication uses to keep the smallest id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mlm_data.quality.minhash import estimated_jaccard

Node = tuple[str, str, bytes]
Edge = tuple[Node, Node]

MAX_CENTRES = 32
"""Centres tried per band bucket: work is at most this many passes over the bucket."""


def verify_bucket(sketches: np.ndarray, threshold: float, *, sets: Sequence[np.ndarray | None] | None = None,
                  max_centres: int = MAX_CENTRES) -> list[tuple[int, int]]:
    """``(centre, member)`` row pairs whose estimated Jaccard similarity reaches ``threshold``:
    ``estimated_jaccard`` of their sketches, or the exact similarity of their shingle sets
    where both have one (``sets[i]`` sorted distinct hashes, or None).

    ``sketches`` is ``(M, P)`` undensified, rows in id order, so each centre is smaller than
    its members.

    >>> s = np.array([[1, 2, 3, 4], [1, 2, 3, 9], [7, 7, 7, 7], [7, 7, 7, 8]])
    >>> verify_bucket(s, 0.75)
    [(0, 1), (2, 3)]
    """
    remaining = np.arange(len(sketches))
    edges: list[tuple[int, int]] = []
    for _ in range(max_centres):
        if len(remaining) < 2:
            break
        centre, rest = remaining[0], remaining[1:]
        similarity = estimated_jaccard(sketches[centre], sketches[rest])
        if sets is not None and sets[centre] is not None:
            for i, m in enumerate(rest.tolist()):
                if sets[m] is not None:
                    similarity[i] = exact_jaccard(sets[centre], sets[m])
        hit = similarity >= threshold - 1e-9
        edges += [(int(centre), int(m)) for m in rest[hit]]
        remaining = rest[~hit]
    return edges


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct values."""
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def large_star(node: Node, neighbours: Iterable[Node]) -> list[Edge]:
    """Link every neighbour larger than ``node`` to the smallest of ``node`` and its neighbours."""
    ns = set(neighbours)
    m = min(ns | {node})
    return [(v, m) for v in sorted(ns) if v > node]


def small_star(node: Node, smaller: Iterable[Node]) -> list[Edge]:
    """Link ``node`` and its smaller neighbours to the smallest of them."""
    ns = set(smaller) | {node}
    m = min(ns)
    return [(v, m) for v in sorted(ns) if v != m]


def label(smaller: Iterable[Node]) -> Node:
    """The node a dropped node is kept in favour of: its smallest neighbour."""
    return min(smaller)
