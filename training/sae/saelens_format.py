"""Read and write SAELens' on-disk format: `cfg.json` + `sae_weights.safetensors`.

Mapping (SAELens 6): relu ↔ "standard"; topk ↔ "topk" (with `k`); jumprelu ↔ "jumprelu"
(with a `threshold` tensor). A BatchTopK SAE is written as "jumprelu" with its estimated
inference threshold on every latent — exactly how it encodes at inference, and what SAELens
itself does when it saves a BatchTopK SAE. Weight names and shapes are SAELens':
W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in]; the input has b_dec
subtracted before encoding (`apply_b_dec_to_input: true`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from training.sae.config import SaeConfig
from training.sae.model import Sae

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
# Loaded SAEs are for inference; training coefficients are placeholders that pass validation.
_INFERENCE_ONLY = {"l1_coefficient": 1.0, "l0_coefficient": 1.0}


def save_saelens(sae: Sae, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `sae` in SAELens' format. `metadata` (model_name, hook_name, ...) goes into cfg.json."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = sae.config
    weights = {
        "W_enc": sae.W_enc.detach().contiguous(),
        "W_dec": sae.W_dec.detach().contiguous(),
        "b_enc": sae.b_enc.detach().contiguous(),
        "b_dec": sae.b_dec.detach().contiguous(),
    }
    config: dict[str, Any] = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {**(metadata or {}), "facet_config": cfg.to_dict()},
    }
    if cfg.architecture == "relu":
        config["architecture"] = "standard"
    elif cfg.architecture == "topk":
        config.update(architecture="topk", k=cfg.k, rescale_acts_by_decoder_norm=False)
    elif cfg.architecture == "batchtopk":
        config["architecture"] = "jumprelu"
        weights["threshold"] = sae.threshold.detach().expand(cfg.d_sae).contiguous()
    else:
        config["architecture"] = "jumprelu"
        weights["threshold"] = sae.log_threshold.detach().exp().contiguous()
    save_file(weights, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_saelens(directory: str | Path) -> tuple[Sae, dict[str, Any]]:
    """Read an SAE in SAELens' format; return it (in eval mode) and the cfg.json contents."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    weights = load_file(str(directory / WEIGHTS_FILE))
    arch = config.get("architecture", "standard")
    if config.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"{directory}: normalize_activations={config['normalize_activations']!r} is not supported")
    if not config.get("apply_b_dec_to_input", True):
        raise ValueError(f"{directory}: apply_b_dec_to_input=false is not supported")
    d_in, d_sae = int(config["d_in"]), int(config["d_sae"])
    if arch == "standard":
        cfg = SaeConfig("relu", d_in, d_sae, l1_coefficient=_INFERENCE_ONLY["l1_coefficient"])
    elif arch == "topk":
        cfg = SaeConfig("topk", d_in, d_sae, k=int(config["k"]))
    elif arch == "jumprelu":
        cfg = SaeConfig("jumprelu", d_in, d_sae, l0_coefficient=_INFERENCE_ONLY["l0_coefficient"])
    else:
        raise ValueError(f"{directory}: SAELens architecture {arch!r} is not supported (standard, topk, jumprelu)")
    sae = Sae(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(weights[name].to(torch.float32))
        if arch == "jumprelu":
            sae.log_threshold.copy_(weights["threshold"].to(torch.float32).log())
    return sae.eval(), config
