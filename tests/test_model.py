"""The BERT model, optimizer groups and learning-rate schedule, on tiny random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlm_data.config.loading import load
from trainer.config import ModelConfig, PretrainConfig, TrainConfig
from trainer.models.encoder import BertForPreTraining, Block
from trainer.optim import lr_at, param_groups

V, B, T = 97, 3, 16


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                max_position_embeddings=T, nsp_head=True)
    return ModelConfig(**{**base, **kw})


def batch(seed: int = 0, *, mask_rate: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, 11:] = 0  # a padded row
    token_type_ids = (torch.arange(T) >= T // 2).long().expand(B, T).clone()
    labels = torch.where(torch.rand(B, T, generator=g) < mask_rate, ids, torch.full_like(ids, -100))
    labels[attention_mask == 0] = -100
    nsp = torch.tensor([0, 1, -100])
    return dict(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                labels=labels, next_sentence_label=nsp)


def test_output_shapes_with_and_without_labels():
    model = BertForPreTraining(tiny()).eval()
    b = batch()
    n = int((b["labels"] != -100).sum())
    out = model(**b)
    assert out.logits.shape == (n, V) and out.mlm_labels.shape == (n,)
    assert out.nsp_logits.shape == (B, 2)
    assert out.loss.shape == out.mlm_loss.shape == out.nsp_loss.shape == ()
    assert torch.equal(out.mlm_labels, b["labels"][b["labels"] != -100])
    assert torch.allclose(out.loss, out.mlm_loss + out.nsp_loss)
    full = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert full.logits.shape == (B, T, V) and full.loss is None and full.mlm_labels is None


def test_mlm_logits_at_labelled_positions_equal_the_full_computation():
    model = BertForPreTraining(tiny()).eval()
    b = batch(1)
    selected = b["labels"] != -100
    sparse = model(**b)
    full = model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits  # (B, T, V)
    torch.testing.assert_close(sparse.logits, full[selected], rtol=1e-5, atol=1e-5)
    expected_mlm = F.cross_entropy(full.reshape(-1, V), b["labels"].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(sparse.mlm_loss, expected_mlm, rtol=1e-5, atol=1e-6)


def test_nsp_loss_ignores_padding_rows():
    model = BertForPreTraining(tiny()).eval()
    out = model(**batch(2))
    expected = F.cross_entropy(out.nsp_logits[:2], torch.tensor([0, 1]))
    torch.testing.assert_close(out.nsp_loss, expected)


def test_decoder_weight_is_tied_to_the_input_embeddings():
    model = BertForPreTraining(tiny())
    assert model.mlm_head.decoder.weight is model.encoder.embeddings.word.weight
    model(**batch()).loss.backward()
    # One parameter, one gradient: the embedding receives the decoder's gradient too.
    assert model.encoder.embeddings.word.weight.grad.abs().sum() > 0
    names = [n for n, _ in model.named_parameters()]
    assert "mlm_head.decoder.weight" not in names  # counted and optimised once
    copy = BertForPreTraining(tiny())
    copy.load_state_dict(model.state_dict())
    assert copy.mlm_head.decoder.weight is copy.encoder.embeddings.word.weight


def test_padding_does_not_change_real_positions():
    model = BertForPreTraining(tiny(max_position_embeddings=T + 8)).eval()
    b = batch(3)
    ids, am, tt = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    short = model(ids, am, tt).logits
    pad = lambda x, v: torch.cat([x, torch.full((B, 8), v, dtype=x.dtype)], dim=1)  # noqa: E731
    long = model(pad(ids, 0), pad(am, 0), pad(tt, 0)).logits[:, :T]
    torch.testing.assert_close(long[am.bool()], short[am.bool()], rtol=1e-5, atol=1e-5)


def test_a_batch_without_targets_has_a_finite_loss_and_gradient():
    model = BertForPreTraining(tiny(nsp_head=False))
    b = batch(4)
    b["labels"][:] = -100
    del b["next_sentence_label"]
    out = model(**b)
    assert out.logits.shape == (0, V) and out.nsp_loss is None
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_no_nsp_head_without_nsp_and_no_unused_parameters():
    model = BertForPreTraining(tiny(nsp_head=False))
    b = batch(5)
    out = model(**b)  # next_sentence_label is ignored without a head
    assert out.nsp_logits is None and out.nsp_loss is None and torch.equal(out.loss, out.mlm_loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every parameter used


def test_causal_block_ignores_future_tokens():
    torch.manual_seed(0)
    block = Block(tiny(dropout=0.0, attention_dropout=0.0), is_causal=True).eval()
    x = torch.randn(2, 8, 32)
    y = x.clone()
    y[:, 5:] = torch.randn(2, 3, 32)
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool)
    torch.testing.assert_close(block(x, mask)[:, :5], block(y, mask)[:, :5])
    torch.testing.assert_close(block(x, None)[:, :5], block(y, None)[:, :5])
    assert not torch.allclose(block(x, mask)[:, 5:], block(y, mask)[:, 5:])


@pytest.mark.parametrize("layer_norm", ["post", "pre"])
def test_both_layer_norm_placements_learn_a_fixed_batch(layer_norm):
    torch.manual_seed(0)
    model = BertForPreTraining(tiny(layer_norm=layer_norm, dropout=0.0, attention_dropout=0.0))
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-3)
    b = batch(6)
    losses = []
    for _ in range(30):
        loss = model(**b).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.3 * losses[0], losses
    assert (model.encoder.ln_f is not None) == (layer_norm == "pre")


def test_initialisation_follows_bert():
    torch.manual_seed(0)
    model = BertForPreTraining(ModelConfig(vocab_size=2000, hidden_size=256, num_layers=1, num_heads=4,
                                           intermediate_size=512))
    w = model.encoder.blocks[0].mlp.fc.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert model.encoder.blocks[0].mlp.fc.bias.abs().sum() == 0
    assert torch.equal(model.encoder.blocks[0].ln_1.weight, torch.ones(256))
    assert abs(model.encoder.embeddings.word.weight.std().item() - 0.02) < 0.001


def test_bert_base_config_has_bert_base_size():
    cfg = load(PretrainConfig, "configs/train/bert-base.yaml")
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_heads, cfg.model.intermediate_size) == (
        12, 768, 12, 3072)
    with torch.device("meta"):
        model = BertForPreTraining(ModelConfig(**{**cfg.model.__dict__, "vocab_size": 30522, "nsp_head": True}))
    # The parameter count of Hugging Face's BertForPreTraining for bert-base-uncased.
    assert model.num_parameters() == 110_106_428
    assert model.num_parameters(non_embedding=True) == 110_106_428 - (30522 + 512 + 2) * 768


def test_weight_decay_skips_biases_and_layer_norms():
    model = BertForPreTraining(tiny())
    decay, no_decay = param_groups(model, 0.01)
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[i] for i in ids(decay)}
    skipped = {names[i] for i in ids(no_decay)}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert decayed | skipped == set(names.values()) and not decayed & skipped
    assert all(n.endswith(".weight") and ".ln" not in n for n in decayed)
    assert "encoder.embeddings.word.weight" in decayed and "encoder.embeddings.position.weight" in decayed
    assert {"encoder.embeddings.ln.weight", "encoder.embeddings.ln.bias", "mlm_head.decoder.bias",
            "encoder.blocks.0.ln_1.weight", "encoder.blocks.1.attn.qkv.bias", "mlm_head.ln.weight"} <= skipped


@pytest.mark.parametrize(("schedule", "step", "expected"), [
    # lr 1e-3, min_lr 1e-4, 4 warmup steps, 14 steps: warmup climbs 1/4 of lr per step,
    # then 10 decay steps from 1e-3 to 1e-4.
    ("linear", 0, 2.5e-4), ("linear", 1, 5e-4), ("linear", 3, 1e-3), ("linear", 4, 1e-3),
    ("linear", 9, 5.5e-4), ("linear", 13, 1.9e-4), ("linear", 14, 1e-4), ("linear", 50, 1e-4),
    ("cosine", 3, 1e-3), ("cosine", 4, 1e-3), ("cosine", 9, 5.5e-4),
    # cos(pi * 0.2) = 0.809017: 1e-4 + 9e-4 * 0.5 * 1.809017
    ("cosine", 6, 9.140576e-4), ("cosine", 14, 1e-4),
])
def test_lr_schedule_by_hand(schedule, step, expected):
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=4, max_steps=14, schedule=schedule)
    assert lr_at(step, cfg) == pytest.approx(expected, rel=1e-6)


def test_lr_without_warmup_starts_at_peak():
    assert lr_at(0, TrainConfig(lr=2e-4, warmup_steps=0, max_steps=10)) == 2e-4


def test_matches_hugging_face_bert_given_the_same_weights():
    transformers = pytest.importorskip("transformers")
    cfg = tiny(dropout=0.0, attention_dropout=0.0)
    ours = BertForPreTraining(cfg).eval()
    hf = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=T, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, hidden_act="gelu", attn_implementation="eager")).eval()
    w = ours.state_dict()
    theirs = {
        "bert.embeddings.word_embeddings.weight": w["encoder.embeddings.word.weight"],
        "bert.embeddings.position_embeddings.weight": w["encoder.embeddings.position.weight"],
        "bert.embeddings.token_type_embeddings.weight": w["encoder.embeddings.token_type.weight"],
        "bert.embeddings.LayerNorm.weight": w["encoder.embeddings.ln.weight"],
        "bert.embeddings.LayerNorm.bias": w["encoder.embeddings.ln.bias"],
        "bert.pooler.dense.weight": w["pooler.weight"], "bert.pooler.dense.bias": w["pooler.bias"],
        "cls.predictions.transform.dense.weight": w["mlm_head.dense.weight"],
        "cls.predictions.transform.dense.bias": w["mlm_head.dense.bias"],
        "cls.predictions.transform.LayerNorm.weight": w["mlm_head.ln.weight"],
        "cls.predictions.transform.LayerNorm.bias": w["mlm_head.ln.bias"],
        "cls.predictions.decoder.weight": w["encoder.embeddings.word.weight"],
        "cls.predictions.bias": w["mlm_head.decoder.bias"], "cls.predictions.decoder.bias": w["mlm_head.decoder.bias"],
        "cls.seq_relationship.weight": w["nsp.weight"], "cls.seq_relationship.bias": w["nsp.bias"],
    }
    for i in range(cfg.num_layers):
        ours_l, hf_l = f"encoder.blocks.{i}", f"bert.encoder.layer.{i}"
        for kind in ("weight", "bias"):
            q, k, v = w[f"{ours_l}.attn.qkv.{kind}"].chunk(3)
            theirs |= {
                f"{hf_l}.attention.self.query.{kind}": q, f"{hf_l}.attention.self.key.{kind}": k,
                f"{hf_l}.attention.self.value.{kind}": v,
                f"{hf_l}.attention.output.dense.{kind}": w[f"{ours_l}.attn.proj.{kind}"],
                f"{hf_l}.attention.output.LayerNorm.{kind}": w[f"{ours_l}.ln_1.{kind}"],
                f"{hf_l}.intermediate.dense.{kind}": w[f"{ours_l}.mlp.fc.{kind}"],
                f"{hf_l}.output.dense.{kind}": w[f"{ours_l}.mlp.proj.{kind}"],
                f"{hf_l}.output.LayerNorm.{kind}": w[f"{ours_l}.ln_2.{kind}"],
            }
    missing, unexpected = hf.load_state_dict(theirs, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing)
    b = batch(7)
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = hf(**inputs)
        got = ours(**inputs)
    real = b["attention_mask"].bool()  # HF scores padding positions too; only real ones matter
    torch.testing.assert_close(got.logits[real], expected.prediction_logits[real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.nsp_logits, expected.seq_relationship_logits, rtol=1e-4, atol=1e-4)
