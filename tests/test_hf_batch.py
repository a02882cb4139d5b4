"""``hf_inputs(batch)``: loader batches fed to Hugging Face models, also to transformers 4.x,
whose ``forward`` refuses keywords it does not name (``sample_mask``, ``row_id``, ...)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import torch

from trainer.loading.hf_batch import HF_KEYS, hf_inputs

from conftest import REPO
from test_loader_support import labelled_dataset, open_loader

transformers = pytest.importorskip("transformers")

#: The oldest transformers pyproject.toml admits (the test extra's floor).
OLDEST = "4.40"


def named_parameters(model: torch.nn.Module) -> set[str]:
    """What transformers 4.x accepts: the parameters ``forward`` names (never ``**kwargs``)."""
    return {name for name, p in inspect.signature(model.forward).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def bert_config(loader, **kw):
    return transformers.BertConfig(vocab_size=loader.vocab_size, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=loader.max_seq_length, **kw)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return labelled_dataset(tmp_path_factory.mktemp("hf") / "tokens", "token_classification")


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    return labelled_dataset(tmp_path_factory.mktemp("hf") / "sentences", "sequence_classification")


@pytest.mark.parametrize(("dataset", "hf_class"), [
    ("nsp", "BertForPreTraining"), ("nsp", "BertForMaskedLM"), ("fullsent", "BertForMaskedLM"),
    ("tokens", "BertForTokenClassification"), ("sentences", "BertForSequenceClassification"),
])
def test_hf_inputs_holds_only_what_the_model_names(dataset, hf_class, request):
    loader = open_loader([request.getfixturevalue(dataset)], batch_size=4, seed=1)
    batch = next(iter(loader))
    labels = {"num_labels": len(loader.labels)} if loader.labels else {}
    model = getattr(transformers, hf_class)(bert_config(loader, **labels))
    accepted = named_parameters(model)
    assert not set(batch) <= accepted  # the batch as it is would be refused by transformers 4.x
    inputs = hf_inputs(batch, model)
    assert set(inputs) <= accepted and {"input_ids", "attention_mask", "labels"} <= set(inputs)
    assert all(inputs[k] is batch[k] for k in inputs)  # a view: nothing copied
    assert torch.isfinite(model(**inputs).loss)
    if hf_class == "BertForPreTraining":  # it names every HF key: no model needed
        assert hf_inputs(batch) == inputs and set(inputs) == set(HF_KEYS)
    loader.close()


@pytest.mark.slow
def test_the_oldest_declared_transformers_takes_hf_inputs_and_loads_an_export(nsp, tmp_path):
    """Installs transformers 4.40 (and the tokenizers and hub it pins) into a scratch folder
    placed in front of this environment, then feeds it a real batch and our HF export."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"transformers>={OLDEST}"' in pyproject, "OLDEST must be the floor pyproject.toml declares"
    scratch = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(scratch),
         f"transformers=={OLDEST}.*", "tokenizers>=0.19,<0.20", "huggingface-hub>=0.19.3,<1.0"],
        capture_output=True, text=True)
    if install.returncode:
        pytest.skip(f"could not install transformers {OLDEST} (no package index?): {install.stderr[-300:]}")

    from test_hf_interop import randomize, save_run, tiny

    from trainer.export import export_hf
    from trainer.models.encoder import BertForPreTraining

    loader = open_loader([nsp], batch_size=4, seed=1)
    batch = next(iter(loader))
    loader.close()
    cfg = tiny(vocab_size=loader.vocab_size, max_position_embeddings=loader.max_seq_length)
    ours = randomize(BertForPreTraining(cfg))
    save_run(tmp_path / "run", ours, cfg)
    export_hf(str(tmp_path / "run"), str(tmp_path / "hf"))
    with torch.no_grad():
        expected = ours(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    torch.save({"batch": batch, "logits": expected}, tmp_path / "batch.pt")

    script = textwrap.dedent(f"""
        import json, torch, transformers
        from trainer.loading.hf_batch import hf_inputs
        saved = torch.load({str(tmp_path / "batch.pt")!r}, weights_only=True)
        batch = saved["batch"]
        model = transformers.BertForPreTraining.from_pretrained({str(tmp_path / "hf")!r}).eval()
        try:
            model(**batch)
            refused = None
        except TypeError as e:
            refused = str(e)
        with torch.no_grad():
            out = model(**hf_inputs(batch))
            masked = transformers.BertForMaskedLM.from_pretrained({str(tmp_path / "hf")!r}).eval()
            mlm = masked(**hf_inputs(batch, masked))
        real = batch["attention_mask"].bool()
        diff = (out.prediction_logits[real] - saved["logits"][real]).abs().max().item()
        print(json.dumps({{"version": transformers.__version__, "refused": refused, "loss": out.loss.item(),
                          "mlm_loss": mlm.loss.item(), "max_logit_diff": diff}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(scratch), str(REPO), sysconfig.get_paths()["purelib"]])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"].startswith(OLDEST + ".")
    assert "unexpected keyword argument" in result["refused"]  # what users of 4.x hit without hf_inputs
    assert all(map(lambda v: v == v and abs(v) < 1e6, (result["loss"], result["mlm_loss"])))
    assert result["max_logit_diff"] < 1e-4
