"""Near-duplicate removal: signatures, bucket verification and connected components as pure
functions, then through Beam: quality on a corpus of near-copies, accounting, determinism."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

import mlm_data.stages.batches
from mlm_data.config.preprocess import CleanConfig, DedupConfig
from mlm_data.quality.clusters import label, large_star, small_star, verify_bucket
from mlm_data.quality.minhash import MinHash, estimated_jaccard, lsh_params
from mlm_data.quality.near_dedup import MinHasher, parse_record
from mlm_data.quality.words import batch_words, ngrams
from mlm_data.reading.document_reader import Document
from mlm_data.stages.batches import Batch
from pipelines.near_dedup import ApplyDropsFn, SignFn, StoreBatchFn, VerifyBucketFn

from conftest import REPO, demo_documents, write_corpus


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("near_dedup_bench", REPO / "bench" / "near_dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_signatures_are_stable_and_do_not_depend_on_the_batch():
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.", "Another, different text."]
    hasher = MinHasher(DedupConfig(), seed=7)
    together = hasher.sign([Document(f"d#{i}", t) for i, t in enumerate(texts)], CleanConfig())
    alone = hasher.sign([Document("x#0", texts[0])], CleanConfig())
    assert np.array_equal(together.sketches[0], alone.sketches[0]) and np.array_equal(together.keys[0], alone.keys[0])
    assert hashlib.sha256(alone.sketches.tobytes() + alone.keys.tobytes()).hexdigest()[:16] == GOLDEN_SIGNATURE


GOLDEN_SIGNATURE = "c82495478713e4de"   # the same on every machine, forever


def test_signature_agreement_estimates_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    base = [rng.choice(vocab) for _ in range(400)]
    other = base[:300] + [rng.choice(vocab) for _ in range(100)]
    words = batch_words([" ".join(base), " ".join(other)])
    g = ngrams(words, 3, whole_short_documents=True)
    s1, s2 = set(zip(base, base[1:], base[2:])), set(zip(other, other[1:], other[2:]))
    true = len(s1 & s2) / len(s1 | s2)
    sigs = MinHash(1, 512).signatures(g.hashes, g.offsets)     # fewer shingles than bins: densified
    assert abs((sigs[0] == sigs[1]).mean() - true) < 0.05


def test_one_permutation_signatures_are_unbiased_for_small_and_large_sets():
    """Agreement minus the true Jaccard over 400 random set pairs of 2 to 1,000 elements (many
    with empty bins to densify), each under its own seed: no bias, and a spread no wider than
    classic 128-function MinHash's sqrt(J(1-J)/128) <= 0.044."""
    rng = np.random.default_rng(0)
    errors = []
    for seed in range(400):
        n = int(rng.integers(2, 1000))
        shared = int(rng.integers(0, n + 1))
        a = rng.integers(0, 2**63, n, dtype=np.uint64)
        b = np.concatenate([a[:shared], rng.integers(0, 2**63, n - shared, dtype=np.uint64)])
        sigs = MinHash(seed, 128).signatures(np.concatenate([a, b]), np.array([0, n, 2 * n]))
        errors.append((sigs[0] == sigs[1]).mean() - shared / (2 * n - shared))
    assert abs(np.mean(errors)) < 0.005 and np.std(errors) < 0.044


def test_every_position_of_a_document_with_shingles_is_filled():
    sigs = MinHash(3, 128).signatures(np.array([11, 5, 7, 9], dtype=np.uint64), np.array([0, 1, 1, 4]))
    assert len(set(sigs[0].tolist())) == 1 and sigs[0, 0] != 0xFFFFFFFF     # one shingle: its value everywhere
    assert (sigs[1] == 0xFFFFFFFF).all()                                     # no shingles: EMPTY
    assert set(sigs[2].tolist()) <= set(MinHash(3, 128).signatures(np.array([5, 7, 9], dtype=np.uint64),
                                                                    np.array([0, 1, 2, 3])).ravel().tolist())
    same = MinHash(3, 128).signatures(np.array([9, 7, 5], dtype=np.uint64), np.array([0, 3]))
    assert np.array_equal(same[0], sigs[2])                                  # a set: order does not matter


def test_short_templated_pages_are_compared_by_their_exact_shingle_sets():
    """Two 9-word stubs that differ in their last word share 4 of 6 shingles (Jaccard 0.67).
    Sketches of so few shingles are coarse: over 200 seeds the sketch estimate reaches 0.8 a
    few times. Documents with at most num_perm shingles carry their shingle sets, and
    verification of two such documents uses them, so at 0.8 the stubs are never linked."""
    docs = [Document("s#0", "The node you are looking for is at XREFconv."),
            Document("s#1", "The node you are looking for is at XREFfigureresizefcn.")]
    sketch_hits = 0
    for seed in range(200):
        signed = MinHasher(DedupConfig(), seed=seed).sign(docs, CleanConfig())
        sketch_hits += estimated_jaccard(signed.sketches[0], signed.sketches[1:])[0] >= 0.8
        assert verify_bucket(signed.sketches, 0.8, sets=signed.sets) == []
        assert verify_bucket(signed.sketches, 0.6, sets=signed.sets) == [(0, 1)]
        sketch, exact = parse_record(signed.records()[1], 128)
        assert np.array_equal(sketch, signed.sketches[1]) and exact.tolist() == sorted(set(exact.tolist()))
    assert sketch_hits >= 1


def test_both_densification_paths_borrow_the_same_bins():
    """Sparse documents take the filled bin of lowest rank, dense ones walk the sequences: the
    same rule, so a document's signature does not depend on which path it took."""
    rng = np.random.default_rng(5)
    for p in (16, 100, 128):
        minhash = MinHash(9, p)
        filled = rng.random((300, p)) < rng.random((300, 1)) * 0.5
        filled[:, 0] |= ~filled.any(axis=1)
        values = rng.integers(0, 2**32 - 1, (300, p), dtype=np.uint64).astype(np.uint32)
        by_rank, by_walk = np.where(filled, values, 0), np.where(filled, values, 0)
        minhash._lowest_rank(by_rank, filled, np.arange(300))
        rows, bins = np.nonzero(~filled)
        minhash._walk(by_walk, filled, rows, bins)
        assert np.array_equal(by_rank, by_walk)
        assert set(by_rank[0].tolist()) <= set(values[0][filled[0]].tolist())


def test_lsh_parameters_follow_the_threshold():
    assert lsh_params(0.8, 128) == (12, 10)       # datasketch's equal weights pick (9, 13): fewer candidates
    bands, rows = lsh_params(0.5, 128)
    assert bands * rows <= 128 and bands > 9


def test_big_bucket_is_a_star_in_linear_work():
    sigs = np.tile(np.arange(64, dtype=np.uint32), (5000, 1))
    sigs[1::2, :5] += 1                            # still 59/64 equal to the centre
    edges = verify_bucket(sigs, 0.8)
    assert edges == [(0, m) for m in range(1, 5000)]
    distinct = np.arange(300 * 64, dtype=np.uint32).reshape(300, 64)
    assert verify_bucket(distinct, 0.8, max_centres=32) == []     # gives up after 32 centres


def _components(edges, rounds):
    """The pipeline's large-star / small-star rounds and final labels, in memory."""
    from collections import defaultdict

    for _ in range(rounds):
        nbrs = defaultdict(set)
        for hi, lo in edges:
            nbrs[hi].add(lo)
            nbrs[lo].add(hi)
        edges = {e for n, ns in nbrs.items() for e in large_star(n, ns)}
        smaller = defaultdict(set)
        for hi, lo in edges:
            smaller[hi].add(lo)
        edges = {e for n, ns in smaller.items() for e in small_star(n, ns)}
    smaller = defaultdict(set)
    for hi, lo in edges:
        smaller[hi].add(lo)
    return {n: label(ns) for n, ns in smaller.items()}


@pytest.mark.parametrize("seed", range(5))
def test_components_match_union_find_and_stay_safe_when_cut_short(seed):
    rng = random.Random(seed)
    nodes = [(f"doc{i:04d}", "", b"") for i in range(300)]
    edges = set()
    for _ in range(260):                      # sparse: long chains and trees, the hard case
        a, b = rng.sample(nodes, 2)
        edges.add((max(a, b), min(a, b)))
    parent = {n: n for n in nodes}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for hi, lo in sorted(edges):
        ra, rb = find(hi), find(lo)
        parent[max(ra, rb)] = min(ra, rb)
    expected = {n: find(n) for n in nodes if find(n) != n}
    assert _components(edges, rounds=8) == expected
    short = _components(edges, rounds=1)
    for node, kept in short.items():          # every drop points down, within its component
        assert kept < node and find(kept) == find(node)
    assert all(root not in short for root in set(expected.values()))


def test_dofns_pickle_and_work_alone(tmp_path):
    docs = [Document("f#0", "one two three four five six seven"), Document("f#1", "one two three four five six seven")]
    sign = pickle.loads(pickle.dumps(SignFn(DedupConfig(num_perm=16, bands=4, rows=4), CleanConfig(), 1, str(tmp_path))))
    sign.setup()
    entries = list(sign.process(Batch(items=docs)))
    assert len(entries) == 8 and pickle.loads(entries[0][1])[1][0].startswith(str(tmp_path))   # spilled signatures
    verify = pickle.loads(pickle.dumps(VerifyBucketFn(0.8, 16)))
    verify.setup()
    edges = list(verify.process((entries[0][0], [entries[0][1], entries[4][1]])))
    assert [(hi[0], lo[0]) for hi, lo in edges] == [("f#1", "f#0")]
    stored = list(pickle.loads(pickle.dumps(StoreBatchFn(str(tmp_path)))).process(Batch(items=docs)))
    out = list(pickle.loads(pickle.dumps(ApplyDropsFn())).process(
        ("f#0", {"batch": [stored[0][1]], "drops": [("f#1", "duplicate", "f#0")]})))
    assert [d.id for d in out[0].items] == ["f#0"] and out[0].counts.dropped == {"duplicate": 1}


def test_records_inline_and_spilled_give_the_same_edges(tmp_path):
    """Remote runners carry each document's record in its band entries, local ones a reference
    into a spill file: the buckets verify to the same edges either way."""
    docs = [Document(f"f#{i}", text) for i, text in enumerate(demo_documents(6))]
    docs += [Document("f#6", docs[2].text.replace(".", "!", 2)), Document("f#7", "one two three four five six"),
             Document("f#8", "one two three four five six seven")]
    edges = {}
    for name, spill_dir in (("inline", None), ("spilled", str(tmp_path))):
        sign = SignFn(DedupConfig(jaccard_threshold=0.5), CleanConfig(min_document_chars=1), 1, spill_dir)
        sign.setup()
        buckets: dict[int, list[bytes]] = {}
        for key, member in sign.process(Batch(items=docs)):
            buckets.setdefault(key, []).append(member)
        verify = VerifyBucketFn(0.5, 128)
        verify.setup()
        edges[name] = sorted({(hi[0], lo[0]) for key, members in buckets.items()
                              for hi, lo in verify.process((key, members))})
    assert edges["inline"] == edges["spilled"] == [("f#6", "f#2"), ("f#8", "f#7")]


def _quality_corpus(bench, tmp_path: Path):
    chosen = bench.distinct(demo_documents(190), 100)
    files, kinds = bench.quality_corpus(chosen[:88], chosen[88:], seed=3, copies_per_rate=30)
    return bench.write_files(tmp_path / "in", files), files, kinds


def test_recall_and_false_positives_on_near_copies(tmp_path, bench):
    corpus, files, kinds = _quality_corpus(bench, tmp_path)
    counts, dropped = bench.run_pipeline(corpus, tmp_path / "out", **{"dedup.jaccard_threshold": 0.5})
    s = bench.score(kinds, set(dropped))
    assert s["recall"]["copy-0.05"] >= 0.95 and s["recall"]["copy-0.01"] == 1.0
    assert s["recall"]["boilerplate-copy"] >= 0.95
    assert s["false_positive_rate"] <= 0.005
    assert counts["documents_dropped"]["near_duplicate"] == len(dropped)
    assert counts["documents_read"] == counts["documents_written"] + sum(counts["documents_dropped"].values())
    originals = {doc_id for doc_id, kind in kinds if kind == "original"}
    assert set(dropped.values()) <= originals            # every copy kept in favour of its original


def test_exact_copies_count_as_duplicates_and_clusters_file_names_the_kept(tmp_path, preprocess):
    docs = demo_documents(12)
    edited = docs[5].replace(".", "!", 3)           # same words, other text: a near-duplicate
    corpus = write_corpus(tmp_path / "in", [docs, [docs[1], edited]])
    clusters = tmp_path / "clusters.jsonl"
    m = preprocess(str(corpus), tmp_path / "out", **{"dedup.near_duplicates": True,
                                                      "dedup.write_clusters": str(clusters)})
    assert m.data["counts"]["documents_dropped"] == {"duplicate": 1, "near_duplicate": 1}
    lines = [json.loads(x) for x in clusters.read_text().splitlines()]
    assert lines == [{"id": "part-1.txt#0", "kept": "part-0.txt#1", "reason": "duplicate"},
                     {"id": "part-1.txt#1", "kept": "part-0.txt#5", "reason": "near_duplicate"}]


def _dataset_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _determinism_corpus(bench, tmp_path):
    docs = demo_documents(40)
    rng = random.Random(5)
    copies = [bench.near_copy(docs[i], 0.01, rng) for i in range(0, 40, 3)]
    return docs + copies


KW = {"dedup.near_duplicates": True, "output.num_buckets": 2, "output.validation_fraction": 0.1}


def test_same_bytes_in_process_multi_process_and_any_input_order(tmp_path, preprocess, bench, monkeypatch):
    all_docs = _determinism_corpus(bench, tmp_path)
    a = write_corpus(tmp_path / "a", [all_docs[:30], all_docs[30:]], names=["x.txt", "y.txt"])
    ref = preprocess([str(a / "x.txt"), str(a / "y.txt")], tmp_path / "inproc", **KW)
    assert ref.data["counts"]["documents_dropped"]["near_duplicate"] >= 10
    preprocess([str(a / "x.txt"), str(a / "y.txt")], tmp_path / "multi", beam_args=[
        "--direct_running_mode=multi_processing", "--direct_num_workers=2"], **KW)
    # files listed the other way round, and cut into many small batches (other batch keys)
    monkeypatch.setattr(mlm_data.stages.batches, "BATCH_CHARS", 20_000)
    reordered = preprocess([str(a / "y.txt"), str(a / "x.txt")], tmp_path / "reordered", **KW)
    reference = _dataset_bytes(tmp_path / "inproc")
    assert _dataset_bytes(tmp_path / "multi") == reference
    # The manifest and run.json record the inputs in the order given; the data is the same.
    shards = {k: v for k, v in reference.items() if k not in ("manifest.json", "run.json")}
    assert {k: v for k, v in _dataset_bytes(tmp_path / "reordered").items()
            if k not in ("manifest.json", "run.json")} == shards
    for key in ("counts", "shards", "stats"):
        assert reordered.data[key] == ref.data[key]


@pytest.mark.slow
def test_dask_runner_matches_in_process(tmp_path, preprocess, bench, dask_scheduler):
    all_docs = _determinism_corpus(bench, tmp_path)[:30]
    corpus = write_corpus(tmp_path / "in", [all_docs[:15], all_docs[15:]])
    preprocess(str(corpus), tmp_path / "inproc", **KW)
    preprocess(str(corpus), tmp_path / "dask", beam_args=[
        "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", dask_scheduler], **KW)
    assert _dataset_bytes(tmp_path / "dask") == _dataset_bytes(tmp_path / "inproc")


def test_each_document_is_cleaned_once_and_the_dataset_is_the_same(tmp_path, preprocess, monkeypatch):
    """With near-dedup (alone or after filters) the first quality stage cleans every document and
    marks its batch; nothing cleans it again, and the shards are byte for byte those of a run
    whose ``CleanAndSplit`` cleans again anyway."""
    import mlm_data.quality.documents as documents
    import mlm_data.stages.prepare_documents as prepare

    docs = demo_documents(40) + ["  \t ", "\u200b\u200b", "x", "zero\u200bwidth " * 30]
    reaching = len(docs) - 1                    # a blank "document" is only a separator to the reader
    corpus = write_corpus(tmp_path / "in", [docs])
    calls = []
    real_clean_text, real_clean_and_split = documents.clean_text, prepare.clean_and_split
    monkeypatch.setattr(documents, "clean_text", lambda text, **kw: calls.append(text) or real_clean_text(text, **kw))
    settings = {"dedup.near_duplicates": True, "clean.min_document_chars": 5}
    for name, extra in (("dedup", {}), ("filters", {"filters.min_words": 3})):
        calls.clear()
        once = preprocess(str(corpus), tmp_path / name, **settings, **extra)
        assert len(calls) == reaching, name
        with monkeypatch.context() as m:
            m.setattr(prepare, "clean_and_split", lambda d, cfg, counts, **_: real_clean_and_split(d, cfg, counts))
            again = preprocess(str(corpus), tmp_path / f"{name}-again", **settings, **extra)
        assert len(calls) > 3 * reaching - 10, name                   # cleaned again in CleanAndSplit
        assert _dataset_bytes(tmp_path / name) == _dataset_bytes(tmp_path / f"{name}-again")
        assert once.data["counts"] == again.data["counts"]
        assert once.data["counts"]["documents_dropped"] == {"empty": 1, "document_too_short": 1}   # by cleaning


def test_an_unwritable_clusters_file_fails_before_the_run(tmp_path, preprocess):
    """The clusters file is written at the end of the run: a wrong path is refused up front, in
    one line, with the old dataset untouched and no probe left behind."""
    from mlm_data.errors import ConfigError

    corpus = write_corpus(tmp_path / "in", [demo_documents(8)])
    preprocess(str(corpus), tmp_path / "out")
    before = _dataset_bytes(tmp_path / "out")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    for path, says in ((tmp_path / "a-file" / "c.jsonl", "a folder on its path is a file"),
                       (tmp_path / "a-dir", "is a directory")):
        with pytest.raises(ConfigError, match=f"^mlm-data error: dedup.write_clusters: {path}: .*{says}"):
            preprocess(str(corpus), tmp_path / "out", **{"output.overwrite": True, "dedup.near_duplicates": True,
                                                        "dedup.write_clusters": str(path)})
    assert _dataset_bytes(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-file", "in", "out"]
    assert list((tmp_path / "a-dir").iterdir()) == []
