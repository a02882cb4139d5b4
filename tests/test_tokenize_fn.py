"""TokenizeFn lends its encoder back on teardown, for the next instance of the same run only."""

from __future__ import annotations

import hashlib
import pickle

from pipelines.document_stages import TokenizeFn

from conftest import TOKENIZER


def _fn() -> TokenizeFn:
    return TokenizeFn(str(TOKENIZER), hashlib.sha256(TOKENIZER.read_bytes()).hexdigest(), overlap=False)


def test_a_torn_down_encoder_serves_the_next_partition_of_the_same_run_only():
    built = _fn()
    first, second = pickle.loads(pickle.dumps(built)), pickle.loads(pickle.dumps(built))
    first.setup()
    encoder = first._encoder
    first.teardown()
    second.setup()
    assert second._encoder is encoder            # Dask's next partition: warm cache, no reload
    other_run = _fn()
    other_run.setup()
    assert other_run._encoder is not encoder     # another pipeline starts cold
    second.teardown()
    other_run.teardown()
