"""RoBERTa-style packing and causal-LM blocks: every token kept, in order, within limits."""

from __future__ import annotations

import numpy as np
import pytest

from mlm_data.instances.packing import pack_causal, pack_sentences
from mlm_data.instances.rows import gather_index, take

from helpers import random_docs, synthetic_docs

CLS, SEP = 1, 2


def rows_of(docs, pieces):
    src, const, offsets = gather_index(pieces)
    ids = take(docs.ids.astype(np.int64), src, const)
    return [ids[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


@pytest.mark.parametrize("cross", [True, False])
@pytest.mark.parametrize("max_len", [8, 32, 128])
def test_every_token_kept_in_order_and_rows_fit(cross, max_len):
    docs = random_docs(np.random.default_rng(0), 80, tokens=(1, 60))
    rows = rows_of(docs, pack_sentences(docs, max_seq_length=max_len, cls_id=CLS, sep_id=SEP, cross_documents=cross))
    assert all(len(r) <= max_len for r in rows)
    assert all(r[0] == CLS and r[-1] == SEP for r in rows)
    content = np.concatenate([r[(r != CLS) & (r != SEP)] for r in rows])
    np.testing.assert_array_equal(content, docs.ids)  # nothing lost, nothing reordered


def test_full_sentences_cross_documents_with_separator():
    docs = synthetic_docs([[3], [3]], id_offset=10)
    rows = rows_of(docs, pack_sentences(docs, max_seq_length=16, cls_id=CLS, sep_id=SEP, cross_documents=True))
    assert [r.tolist() for r in rows] == [[CLS, 10, 11, 12, SEP, 13, 14, 15, SEP]]


def test_doc_sentences_never_mix_documents():
    docs = synthetic_docs([[3], [3]], id_offset=10)
    rows = rows_of(docs, pack_sentences(docs, max_seq_length=16, cls_id=CLS, sep_id=SEP, cross_documents=False))
    assert [r.tolist() for r in rows] == [[CLS, 10, 11, 12, SEP], [CLS, 13, 14, 15, SEP]]


def test_whole_sentences_move_to_the_next_row():
    # capacity 6: [4] fits, [3] does not fit beside it, [5] does not fit beside [3]
    docs = synthetic_docs([[4, 3, 5]], id_offset=100)
    rows = rows_of(docs, pack_sentences(docs, max_seq_length=8, cls_id=CLS, sep_id=SEP, cross_documents=True))
    assert [len(r) - 2 for r in rows] == [4, 3, 5]


def test_long_sentence_is_cut_not_dropped():
    docs = synthetic_docs([[2, 13]], id_offset=100)
    rows = rows_of(docs, pack_sentences(docs, max_seq_length=7, cls_id=CLS, sep_id=SEP, cross_documents=True))
    assert [len(r) - 2 for r in rows] == [2, 5, 5, 3]


def test_causal_blocks():
    docs = synthetic_docs([[3, 2], [4], [1]], id_offset=10)  # 5 + 4 + 1 tokens, 3 EOS
    blocks = pack_causal(docs, block_size=4, eos_id=0)
    stream = blocks.ids.tolist()
    assert stream == [10, 11, 12, 13, 14, 0, 15, 16, 17, 18, 0, 19, 0]
    assert np.diff(blocks.row_offsets).tolist() == [4, 4, 4, 1]
    starts = [blocks.doc_start_values[a:b].tolist()
              for a, b in zip(blocks.doc_start_offsets[:-1], blocks.doc_start_offsets[1:])]
    # documents start at stream positions 0, 6 and 11 → (block, offset) (0,0), (1,2), (2,3)
    assert starts == [[0], [2], [3], []]


def test_causal_blocks_keep_every_token():
    docs = random_docs(np.random.default_rng(5), 50)
    blocks = pack_causal(docs, block_size=64, eos_id=0)
    assert len(blocks.ids) == len(docs.ids) + docs.num_docs
    np.testing.assert_array_equal(blocks.ids[blocks.ids != 0], docs.ids)
    assert (np.diff(blocks.row_offsets)[:-1] == 64).all()


def test_pieces_concat_and_take_reorder_whole_rows():
    from mlm_data.instances.rows import Pieces, assemble

    docs = synthetic_docs([[3], [2], [4]], id_offset=10)
    a = pack_sentences(docs, max_seq_length=16, cls_id=CLS, sep_id=SEP, cross_documents=False)
    both = Pieces.concat([a, a])
    assert both.num_rows == 2 * a.num_rows
    order = np.array([5, 0, 3])
    ids, word_start, offsets = assemble(both.take(order), docs.ids, docs.word_start)
    rows = [ids[x:y].tolist() for x, y in zip(offsets[:-1], offsets[1:])]
    assert rows == [[CLS, 15, 16, 17, 18, SEP], [CLS, 10, 11, 12, SEP], [CLS, 10, 11, 12, SEP]]
    assert word_start[offsets[:-1]].all()
