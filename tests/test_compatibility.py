"""One "are these datasets made alike?" check (``mlm_data.dataset.compatibility``) for mixing,
evaluation, resume and warm start, with one wording of every difference."""

from __future__ import annotations

import pytest

from mlm_data.dataset.compatibility import (
    EVALUATE,
    INIT,
    MIX,
    RESUME,
    Made,
    check_alike,
    differences,
)
from mlm_data.errors import ConfigError

SHA_A, SHA_B = "a" * 64, "b" * 64
NER = Made("out/ner", "token_classification", SHA_A, ("O", "B-PER", "I-PER"), False)


@pytest.mark.parametrize(("other", "aspects", "expected"), [
    (Made("out/x", "token_classification", SHA_A, ("O", "B-PER", "I-PER"), False), MIX.aspects, []),
    (Made("out/x", "sequence_classification", SHA_A, ("O", "B-PER", "I-PER"), False), ("task",),
     ["out/x has task 'sequence_classification', out/ner has 'token_classification'"]),
    (Made("out/x", "token_classification", SHA_B, ("O", "B-PER", "I-PER"), False), ("tokenizer",),
     ["out/x was tokenized with sha256 bbbbbbbbbbbb…, out/ner with aaaaaaaaaaaa…"]),
    (Made("out/x", "token_classification", SHA_A, ("O", "B-LOC", "I-LOC"), False), ("labels",),
     ["out/x has labels [O, B-LOC, I-LOC] (3), out/ner has [O, B-PER, I-PER] (3)"]),
    (Made("out/x", "token_classification", SHA_A, None, True), ("static_masking", "labels"),
     ["out/x is statically masked, out/ner is not", "out/x has labels none, out/ner has [O, B-PER, I-PER] (3)"]),
    # Not recorded is never a difference.
    (Made("the checkpoint", None, None, ("O", "B-PER", "I-PER")), ("task", "tokenizer", "static_masking"), []),
])
def test_each_difference_has_one_wording(other, aspects, expected):
    assert differences(NER, other, aspects) == expected


def test_layout_lets_packed_mlm_tasks_mix_and_nothing_else():
    full = Made("out/full", "mlm_fullsent", SHA_A, None, False)
    assert differences(full, Made("out/doc", "mlm_docsent", SHA_A, None, False), ("layout",)) == []
    assert differences(full, Made("out/doc", "mlm_docsent", SHA_A, None, False), ("task",)) != []
    assert differences(full, Made("out/nsp", "mlm_nsp", SHA_A, None, False), ("layout",)) == [
        "out/nsp has task 'mlm_nsp', out/full has 'mlm_fullsent' (only mlm_fullsent and mlm_docsent share a batch "
        "layout)"]


@pytest.mark.parametrize(("purpose", "heading"), [
    (MIX, "cannot mix these datasets"), (EVALUATE, "--eval-data must be made like --data"),
    (RESUME, "cannot resume on these datasets"), (INIT, "--init: the weights were trained with another tokenizer"),
])
def test_every_purpose_lists_all_differences_then_the_fix(purpose, heading):
    others = [Made("out/x", "token_classification", SHA_B, ("O",), False),
              Made("out/y", "token_classification", SHA_B, ("O", "B-PER", "I-PER"), False)]
    with pytest.raises(ConfigError) as e:
        check_alike(NER, others, purpose=purpose)
    lines = str(e.value).removeprefix("mlm-data error: ").splitlines()
    assert lines[0].startswith(heading)
    tokenizer = [ln for ln in lines if "was tokenized with" in ln]
    assert tokenizer == ["  - out/x was tokenized with sha256 bbbbbbbbbbbb…, out/ner with aaaaaaaaaaaa…",
                         "  - out/y was tokenized with sha256 bbbbbbbbbbbb…, out/ner with aaaaaaaaaaaa…"]
    assert ("  - out/x has labels [O] (1), out/ner has [O, B-PER, I-PER] (3)" in lines) == ("labels" in purpose.aspects)
    assert lines[-1] == "  " + purpose.fix.format(reference="out/ner")
    check_alike(NER, [NER], purpose=purpose)  # alike: no error
