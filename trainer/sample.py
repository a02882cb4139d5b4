"""``mlm-train generate``: continue a prompt with a causal LM from its run folder.

The run folder holds what is needed: the checkpoint (with its config) and the tokenizer the
model was trained with, whose sha256 the checkpoint records and is checked here, so a stale or
foreign tokenizer.json cannot silently turn ids into the wrong words.
"""

from __future__ import annotations

import torch

from mlm_data import storage
from mlm_data.config.loading import from_dict
from mlm_data.dataset.manifest import TOKENIZER_NAME
from mlm_data.errors import ConfigError
from mlm_data.text.tokenizer import describe, parse_tokenizer
from trainer import checkpoint
from trainer.config import ModelConfig
from trainer.models.decoder import GPT


def generate_text(ckpt: str, prompt: str, *, max_new_tokens: int = 50, greedy: bool = False,
                  top_k: int | None = None, temperature: float = 1.0, seed: int = 0,
                  tokenizer: str | None = None, device: str = "cpu") -> str:
    """The prompt and its continuation, decoded; deterministic for a given ``seed``."""
    errors = []
    if max_new_tokens < 0:
        errors.append(f"--max-new-tokens must be >= 0, found {max_new_tokens}")
    if top_k is not None and top_k < 1:
        errors.append(f"--top-k must be >= 1, found {top_k}")
    if not temperature > 0:
        errors.append(f"--temperature must be > 0, found {temperature}")
    if errors:
        raise ConfigError("; ".join(errors))
    state, run = checkpoint.load_path(ckpt)
    cfg = from_dict(ModelConfig, state["config"]["model"], source=f"{ckpt} (model config)")
    if cfg.task != "causal_lm":
        raise ConfigError(f"{ckpt}: a {cfg.task or 'mlm'} model; generate needs a causal LM (pretrained on a "
                          "causal_lm dataset)")
    url = tokenizer or storage.join(run, TOKENIZER_NAME)
    text = checkpoint.tokenizer_text(state, url)
    tok = parse_tokenizer(text, source=url)
    ids = tok.encode(prompt, add_special_tokens=False).ids
    if not ids:
        raise ConfigError(f"--prompt {prompt!r} encodes to no tokens; give some text to continue")
    model = GPT(cfg)
    model.load_state_dict(state["model"])
    model.to(device)
    generator = torch.Generator(device).manual_seed(seed)
    new = model.generate(torch.tensor([ids], device=device), max_new_tokens, greedy=greedy,
                         temperature=temperature, top_k=top_k, eos_id=describe(tok, text).special.eos,
                         generator=generator)
    return tok.decode(ids + new.tolist())
