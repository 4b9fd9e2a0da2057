"""Our GPT as Hugging Face `transformers.GPT2LMHeadModel`: same sizes, our weights (the reference for tests and
the benchmark's `transformers` peer). GPT-2 keeps its projections as Conv1D, whose weight is the transpose of
nn.Linear's; everything else maps name for name. `transformers` is a test/bench dependency, imported here only.
"""

from __future__ import annotations

from typing import Any

import torch

from services.llm.model import GPT


def to_hf(model: GPT, bos_id: int = 256, eos_id: int = 257) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = model.cfg
    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function="gelu_new", resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=bos_id, eos_token_id=eos_id,
        pad_token_id=eos_id, tie_word_embeddings=True,
    )
    hf = GPT2LMHeadModel(hf_cfg)
    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": model.wte.weight,
        "transformer.wpe.weight": model.wpe.weight,
        "transformer.ln_f.weight": model.ln_f.weight,
        "transformer.ln_f.bias": model.ln_f.bias,
        "lm_head.weight": model.wte.weight,
    }
    for i, b in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            sd[p + theirs + ".weight"] = getattr(b, ours).weight
            sd[p + theirs + ".bias"] = getattr(b, ours).bias
        for ours, theirs in (("c_attn", "attn.c_attn"), ("attn_proj", "attn.c_proj"), ("c_fc", "mlp.c_fc"),
                             ("mlp_proj", "mlp.c_proj")):
            lin = getattr(b, ours)
            sd[p + theirs + ".weight"] = lin.weight.t().contiguous()
            sd[p + theirs + ".bias"] = lin.bias
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    real_missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if real_missing or unexpected:
        raise ValueError(f"weights do not map onto GPT-2: missing={real_missing} unexpected={unexpected}")
    hf.eval()
    return hf
