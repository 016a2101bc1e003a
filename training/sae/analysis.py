"""Analyses stored with the SAEs at build time, so requests only read them.

- Top-activating contexts: over every token of the activation cache, the k strongest
  activations of each latent, stored as windows of tokens with their text and character spans
  (services.sae.tokenization.pack_windows) and the firing token marked.
- Meta-latent activations on a token: how much the token's active latents use a meta-latent,
  Σ_i a_i(x)‖d_i‖·c_im / Σ_i a_i(x)‖d_i‖ (a_i the latent activations, c_im the meta-SAE's
  codes of the unit decoder rows); their top contexts are mined the same way.
- Output-token explanations: the tokens whose logits a direction raises most, through the LM's
  final norm weights and unembedding ("logit lens" on the decoder row).
- Downstream cross-entropy: the LM's next-token loss on held-out text, clean, with the SAE's
  reconstruction spliced in at the layer, and with the layer zero-ablated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import torch

from services.sae.tokenization import TokenizedText, concat, pack_windows
from training.sae.activations import MASSIVE_NORM_FACTOR, LanguageModel, transformer_blocks
from training.sae.model import Sae

CONTEXT_BEFORE = 15  # tokens shown before the firing token
CONTEXT_AFTER = 4  # and after it
WINDOW = CONTEXT_BEFORE + 1 + CONTEXT_AFTER
TOP_PREFIX = "top_"  # keys of the stored windows in an analysis file


@dataclasses.dataclass(frozen=True)
class TopActivations:
    values: np.ndarray  # float32 [units, k], strongest first (0 where fewer than k tokens fire)
    # pack_windows(prefix TOP_PREFIX): top_windows int32 [units, k, WINDOW] ids (PAD after the
    # window's tokens; an empty window where the value is 0), top_lengths, top_flags, top_text...
    windows: dict[str, np.ndarray]
    highlight: np.ndarray  # int32 [units, k]: index of the firing token in its window
    firing_rate: np.ndarray  # float32 [units]: share of tokens where it is active

    def arrays(self) -> dict[str, np.ndarray]:
        """What an analysis file stores (read by services.sae.catalog.Explained)."""
        return {"top_values": self.values, "top_highlight": self.highlight, "firing_rate": self.firing_rate, **self.windows}


@torch.no_grad()
def mine_top_activations(
    activations_of: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    where: np.ndarray,
    contexts: Sequence[TokenizedText],
    k: int,
    chunk: int = 8192,
    progress: bool = False,
) -> TopActivations:
    """`activations_of(rows[chunk])` -> [chunk, units]; keep each unit's k strongest rows.

    Args:
        where: int32 [rows, 2]: (context, position) of each row.
        contexts: the cache's contexts with their text (ActivationCache.context_texts()).
    """
    from tqdm import tqdm

    best_v: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    fired: torch.Tensor | None = None
    for start in tqdm(range(0, len(rows), chunk), desc="top activations", disable=not progress, unit="chunk"):
        acts = activations_of(rows[start : start + chunk])
        count = (acts > 0).sum(0)
        v, i = acts.topk(min(k, len(acts)), dim=0)  # [k', units]
        i = i + start
        if best_v is None or best_i is None or fired is None:
            best_v, best_i, fired = v, i, count
            continue
        fired += count
        v, i = torch.cat([best_v, v]), torch.cat([best_i, i])
        top = v.topk(min(k, len(v)), dim=0).indices
        best_v, best_i = v.gather(0, top), i.gather(0, top)
    assert best_v is not None and best_i is not None and fired is not None
    values = best_v.T.clamp(min=0).numpy().astype(np.float32)  # [units, k]
    index = best_i.T.numpy()
    ctx, pos = where[index, 0], where[index, 1]  # [units, k]
    empty = concat([])
    windows = [
        contexts[c].window(p - CONTEXT_BEFORE, p + CONTEXT_AFTER + 1) if v > 0 else empty
        for c, p, v in zip(ctx.ravel().tolist(), pos.ravel().tolist(), values.ravel().tolist(), strict=True)
    ]
    highlight = np.minimum(pos, CONTEXT_BEFORE).astype(np.int32)
    return TopActivations(
        values, pack_windows(windows, WINDOW, values.shape, TOP_PREFIX), highlight, (fired.float() / len(rows)).numpy().astype(np.float32)
    )


def meta_activations(sae: Sae, codes: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per token x, how much its active latents use each meta-latent m:
    Σ_i a_i(x)‖d_i‖·c_im / Σ_i a_i(x)‖d_i‖ — the meta-codes of its latents, averaged with the
    weight each latent has in the reconstruction. Normalising by the token's total latent mass
    keeps high-norm tokens (where every latent is large) from topping every meta-latent."""
    norms = sae.W_dec.detach().norm(dim=1)

    def activations(x: torch.Tensor) -> torch.Tensor:
        mass = sae.encode(x) * norms
        return (mass @ codes) / mass.sum(1, keepdim=True).clamp(min=1e-12)

    return activations


@torch.no_grad()
def top_output_tokens(
    lm: LanguageModel, directions: torch.Tensor, n: int = 10, chunk: int = 512, centre: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [rows, n] and logit contributions [rows, n] of unit-norm `directions`.

    With `centre`, each direction is taken relative to the mean of all `directions` — the
    logits it adds beyond what the average latent adds. Raw logit-lens lists of a middle layer
    are topped by the same few high-norm tokens for most directions ('<filename>', ' noqa');
    centring (linear, so it equals subtracting each token's mean logit) removes them."""
    model = lm.model
    if not lm.causal or model.get_output_embeddings() is None:  # an encoder: no unembedding to read through
        empty = np.zeros((len(directions), 0))
        return empty.astype(np.int32), empty.astype(np.float32)
    norm = getattr(model.base_model, "norm", None)
    norm_weight = norm.weight.detach() if norm is not None else torch.ones(directions.shape[1])
    unembed = model.get_output_embeddings().weight.detach()  # [vocab, d_model]
    unit = directions / directions.norm(dim=1, keepdim=True).clamp(min=1e-12)
    if centre and len(unit) > 1:
        unit = unit - unit.mean(0, keepdim=True)
    ids, scores = [], []
    for start in range(0, len(unit), chunk):
        logits = (unit[start : start + chunk] * norm_weight) @ unembed.T
        v, i = logits.topk(n, dim=1)
        ids.append(i.numpy().astype(np.int32))
        scores.append(v.numpy().astype(np.float32))
    return np.concatenate(ids), np.concatenate(scores)


@dataclasses.dataclass(frozen=True)
class DownstreamLoss:
    clean: float
    zero_ablation: float
    with_sae: dict[int, float]  # index in the family -> CE
    tokens: int

    def for_sae(self, i: int) -> dict[str, float]:
        ce = self.with_sae[i]
        span = self.zero_ablation - self.clean
        return {
            "ce_clean": self.clean,
            "ce_with_sae": ce,
            "ce_zero_ablation": self.zero_ablation,
            "ce_increase": ce - self.clean,
            "ce_loss_recovered": (self.zero_ablation - ce) / span if span > 0 else float("nan"),
        }


def splice_mask(resid: torch.Tensor, special: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, seq] bool: the positions an SAE replaces — not position 0, not special tokens
    (`special` [batch, seq] bool) and not tokens with a massive residual norm
    (> MASSIVE_NORM_FACTOR × the median), as in the training data."""
    norms = resid.norm(dim=-1)
    mask = norms <= MASSIVE_NORM_FACTOR * norms[:, 1:].median()
    mask[:, 0] = False
    if special is not None:
        mask &= ~special
    return mask


@torch.no_grad()
def downstream_cross_entropy(
    lm: LanguageModel,
    layer: int,
    reconstructions: list[Callable[[torch.Tensor], torch.Tensor]],
    contexts: torch.Tensor,
    batch: int = 8,
    special_ids: Collection[int] = (),
) -> DownstreamLoss:
    """Mean next-token CE (nats) over `contexts` [n, seq] of the *full* LM (not truncated), clean,
    with each reconstruction (rows [m, d_model] -> [m, d_model], e.g. an SAE's decode∘encode)
    spliced into the residual stream after block `layer`, and with those positions zero-ablated.
    Position 0, special tokens (`special_ids`) and massive-norm tokens are left as they are."""
    if not lm.causal:
        raise ValueError(f"{lm.name} is not a causal LM: it has no next-token loss")
    parent, attr = transformer_blocks(lm.model.base_model, lm.n_layers)
    block = getattr(parent, attr)[layer - 1]
    replace: dict[str, Any] = {"fn": None, "special": None}
    specials = torch.tensor(sorted(special_ids), dtype=torch.long)

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        if replace["fn"] is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        mask = splice_mask(hidden, replace["special"])
        new = hidden.clone()
        new[mask] = replace["fn"](hidden[mask])
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(hook)
    try:

        def loss(fn: Callable[[torch.Tensor], torch.Tensor] | None) -> float:
            replace["fn"] = fn
            total, count = 0.0, 0
            for start in range(0, len(contexts), batch):
                ids = contexts[start : start + batch]
                replace["special"] = torch.isin(ids, specials)
                logits = lm.model(input_ids=ids, use_cache=False).logits[:, :-1]
                ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
                total += float(ce)
                count += ids[:, 1:].numel()
            return total / count

        clean = loss(None)
        zero = loss(torch.zeros_like)
        with_sae = {i: loss(fn) for i, fn in enumerate(reconstructions)}
    finally:
        handle.remove()
    return DownstreamLoss(clean, zero, with_sae, int(contexts[:, 1:].numel()))
