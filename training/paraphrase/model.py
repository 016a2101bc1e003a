"""The paraphrase models: a Transformer encoder-decoder and a Transformer language-model prior.

Paper: Yu et al., "Language as a Latent Sequence: deep latent variable models for
semi-supervised paraphrase generation", §3 (DDL: one encoder-decoder trained in both directions
of a labelled pair; VSAR: the missing target of an unlabelled sentence is a latent sequence,
inferred by the same encoder-decoder and regularised by a language-model prior). The paper's
model is a 6-layer, 512-wide Transformer; Facet's default is sized for 2 CPU cores (2 + 2 layers,
128 wide, 4 heads, feed-forward 512: `ModelConfig`'s defaults, measured in
`training.paraphrase.train._default_model`).

Written out (not `nn.Transformer`) because serving needs one decoding step with a key/value cache
as its own ONNX graph (`step`), and the teacher-forced pass (`decode`) must compute exactly what
the step computes. Pre-layer-norm blocks (Xiong et al. 2020) train stably at the learning rates
a short CPU budget needs.

Shapes: B batch, S source length, T target length, V vocabulary, D d_model, L decoder layers,
H heads, K head_dim = D / H. Token ids are int64; [PAD] is `pad_id`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.options import known_fields

# Directions of the encoder's direction embedding (DDL, paper §3.1): one model, both directions.
SOURCE_TO_TARGET = 0
TARGET_TO_SOURCE = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the encoder-decoder (and of the LM prior, which reuses `d_model`, `heads`, `ff_dim`).

    Attributes:
        vocab_size: tokens of the (shortlisted) WordPiece vocabulary.
        d_model: width of every layer (the paper: 512).
        heads: attention heads; `d_model` must divide by it.
        encoder_layers, decoder_layers: Transformer blocks (the paper: 6 each).
        ff_dim: hidden width of each feed-forward block (the paper: 2,048).
        dropout: dropout on embeddings, attention weights and block outputs while training.
        max_positions: learned positions; at least the longest sentence plus [CLS] and [SEP].
        prior_layers: blocks of the language-model prior (a decoder-only Transformer).
        direction_embedding: add a learned source->target / target->source vector to the
            encoder's input (DDL shares one model across both directions; the tag tells it which).
        pad_id, unk_id, bos_id, eos_id: [PAD], [UNK], [CLS] (begin) and [SEP] (end) in the vocabulary.
    """

    vocab_size: int
    d_model: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ff_dim: int = 512
    dropout: float = 0.1
    max_positions: int = 32
    prior_layers: int = 2
    direction_embedding: bool = True
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        positive = ("vocab_size", "d_model", "heads", "encoder_layers", "decoder_layers", "ff_dim", "max_positions", "prior_layers")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("pad_id", "unk_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"ModelConfig.{name} ({value}) must be a token id below vocab_size ({self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = known_fields(cls, data)
        return cls(**data)


def causal_mask(length: int, device: torch.device | None = None) -> Tensor:
    """Additive mask [length, length]: 0 on and below the diagonal, -inf above."""
    return torch.triu(torch.full((length, length), float("-inf"), device=device), diagonal=1)


def padding_bias(mask: Tensor) -> Tensor:
    """Additive attention bias [B, 1, 1, S] from a keep-mask [B, S] (1 keep, 0 ignore).

    A large negative number rather than -inf, so a row with every key masked yields a uniform
    (finite) attention instead of NaN; such rows only occur for padding and are never read."""
    return (1.0 - mask.to(torch.float32))[:, None, None, :] * -1e9


class Attention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2) on [B, H, *, K] heads."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, H, N, K]."""
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values [B, H, N, K] of `x` [B, N, D]."""
        return self.split(self.key(x)), self.split(self.value(x))

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None) -> Tensor:
        """Queries from `x` [B, Q, D] over `keys`/`values` [B, H, N, K]; `bias` broadcasts to [B, H, Q, N]."""
        q = self.split(self.query(x))
        scores = q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)
        if bias is not None:
            scores = scores + bias
        weights = self.dropout(torch.softmax(scores, dim=-1))
        b, _, n, _ = q.shape
        return self.out((weights @ values).transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))


class EncoderBlock(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(c.d_model), Attention(c.d_model, c.heads, c.dropout)
        self.norm2, self.ff = nn.LayerNorm(c.d_model), FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        h = self.norm1(x)
        k, v = self.attn.keys_values(h)
        x = x + self.dropout(self.attn.attend(h, k, v, bias))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder, feed-forward (pre-norm)."""

    def __init__(self, c: ModelConfig, cross: bool = True) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(c.d_model), Attention(c.d_model, c.heads, c.dropout)
        self.cross = cross
        if cross:
            self.norm2, self.cross_attn = nn.LayerNorm(c.d_model), Attention(c.d_model, c.heads, c.dropout)
        self.norm3, self.ff = nn.LayerNorm(c.d_model), FeedForward(c.d_model, c.ff_dim, c.dropout)
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self, x: Tensor, self_k: Tensor, self_v: Tensor, self_bias: Tensor | None, cross_k: Tensor | None, cross_v: Tensor | None, cross_bias: Tensor | None
    ) -> Tensor:
        """`x` [B, Q, D] attends to `self_k`/`self_v` [B, H, N, K] (which include its own positions)."""
        x = x + self.dropout(self.self_attn.attend(self.norm1(x), self_k, self_v, self_bias))
        if self.cross:
            assert cross_k is not None and cross_v is not None
            x = x + self.dropout(self.cross_attn.attend(self.norm2(x), cross_k, cross_v, cross_bias))
        return x + self.dropout(self.ff(self.norm3(x)))


class Embeddings(nn.Module):
    """Token embeddings (shared by encoder, decoder and the tied output layer) and positions."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        nn.init.normal_(self.tokens.weight, std=c.d_model**-0.5)
        with torch.no_grad():
            self.tokens.weight[c.pad_id].zero_()
        self.scale = math.sqrt(c.d_model)

    def embed(self, tokens: Tensor) -> Tensor:
        """ids [B, N] int64, or a distribution over the vocabulary [B, N, V] float (the VSAR
        latent sequence: a Gumbel-softmax sample is embedded as its expectation), -> [B, N, D]."""
        if tokens.dim() == 3:
            return (tokens @ self.tokens.weight) * self.scale
        return self.tokens(tokens) * self.scale


class ParaphraseTransformer(nn.Module):
    """Encoder-decoder that paraphrases in either direction (DDL) and reconstructs from a latent
    sequence (VSAR). The output layer is tied to the token embeddings (Press & Wolf 2017)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = Embeddings(c)
        self.encoder_positions = nn.Embedding(c.max_positions, c.d_model)
        self.decoder_positions = nn.Embedding(c.max_positions, c.d_model)
        self.directions = nn.Embedding(2, c.d_model) if c.direction_embedding else None
        self.encoder_blocks = nn.ModuleList(EncoderBlock(c) for _ in range(c.encoder_layers))
        self.encoder_norm = nn.LayerNorm(c.d_model)
        self.decoder_blocks = nn.ModuleList(DecoderBlock(c) for _ in range(c.decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.d_model)
        self.output_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.dropout = nn.Dropout(c.dropout)

    def decoders(self) -> list[DecoderBlock]:
        return [cast(DecoderBlock, b) for b in self.decoder_blocks]

    # -- encoder ---------------------------------------------------------------------------
    def encode(self, tokens: Tensor, attention_mask: Tensor, direction: int = SOURCE_TO_TARGET) -> Tensor:
        """Encoder states [B, S, D] of `tokens` (ids [B, S] or distributions [B, S, V]);
        `attention_mask` [B, S] is 1 for real tokens. `direction` picks the DDL direction tag."""
        s = tokens.shape[1]
        if s > self.config.max_positions:
            raise ValueError(f"sequence of {s} tokens is longer than max_positions ({self.config.max_positions})")
        positions = torch.arange(s, device=tokens.device)
        x = self.embeddings.embed(tokens) + self.encoder_positions(positions)[None]
        if self.directions is not None:
            x = x + self.directions.weight[direction][None, None]
        x = self.dropout(x)
        bias = padding_bias(attention_mask)
        for block in self.encoder_blocks:
            x = block(x, bias)
        return self.encoder_norm(x)

    def cross_keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Every decoder layer's cross-attention keys and values of the encoder states
        `memory` [B, S, D]: two tensors [B, L, H, S, K] (computed once per source sentence)."""
        pairs = [block.cross_attn.keys_values(memory) for block in self.decoders()]
        return torch.stack([k for k, _ in pairs], dim=1), torch.stack([v for _, v in pairs], dim=1)

    # -- decoder ---------------------------------------------------------------------------
    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits [..., V] from final decoder states [..., D] (tied output layer)."""
        return hidden @ self.embeddings.tokens.weight.T + self.output_bias

    def decode(self, targets_in: Tensor, memory: Tensor, attention_mask: Tensor) -> Tensor:
        """Teacher-forced logits [B, T, V] for `targets_in` [B, T] ([CLS] y without the last
        token) given encoder states `memory` [B, S, D] and its `attention_mask` [B, S]. Padding
        in `targets_in` needs no mask: it only follows real tokens and its outputs are ignored."""
        t = targets_in.shape[1]
        if t > self.config.max_positions:
            raise ValueError(f"sequence of {t} tokens is longer than max_positions ({self.config.max_positions})")
        positions = torch.arange(t, device=targets_in.device)
        x = self.dropout(self.embeddings.embed(targets_in) + self.decoder_positions(positions)[None])
        self_bias = causal_mask(t, targets_in.device)[None, None]
        cross_bias = padding_bias(attention_mask)
        for block in self.decoders():
            k, v = block.self_attn.keys_values(block.norm1(x))
            ck, cv = block.cross_attn.keys_values(memory)
            x = block(x, k, v, self_bias, ck, cv, cross_bias)
        return self.logits(self.decoder_norm(x))

    def step(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        past_keys: Tensor,
        past_values: Tensor,
        past_mask: Tensor,
        cross_keys: Tensor,
        cross_values: Tensor,
        attention_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step with a key/value cache: the graph `services.paraphrase.catalog`
        describes (`Kind.DECODER_STEP`).

        Args:
            input_ids: [B, 1] int64, the previous token.
            position_ids: [B, 1] int64, its position (0 for [CLS]).
            past_keys, past_values: [B, L, H, P, K] float32, the self-attention cache.
            past_mask: [B, P] int64, 1 where the cache holds a real earlier token.
            cross_keys, cross_values: [B, L, H, S, K] float32 (`cross_keys_values`).
            attention_mask: [B, S] int64, the source's mask.

        Returns:
            log_probs [B, V] float32 (log-softmax of the next token's logits), present_keys and
            present_values [B, L, H, P + 1, K] (the cache with this step appended).
        """
        x = self.dropout(self.embeddings.embed(input_ids) + self.decoder_positions(position_ids))
        own = torch.ones_like(past_mask[:, :1])
        self_bias = padding_bias(torch.cat([past_mask, own], dim=1))
        cross_bias = padding_bias(attention_mask)
        new_keys, new_values = [], []
        for i, block in enumerate(self.decoders()):
            k, v = block.self_attn.keys_values(block.norm1(x))
            keys = torch.cat([past_keys[:, i], k], dim=2)
            values = torch.cat([past_values[:, i], v], dim=2)
            new_keys.append(keys)
            new_values.append(values)
            x = block(x, keys, values, self_bias, cross_keys[:, i], cross_values[:, i], cross_bias)
        log_probs = torch.log_softmax(self.logits(self.decoder_norm(x[:, -1])), dim=-1)
        return log_probs, torch.stack(new_keys, dim=1), torch.stack(new_values, dim=1)

    def empty_cache(self, batch: int, device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The first step's cache: one zero slot per row, masked out (no zero-length axis)."""
        c = self.config
        shape = (batch, c.decoder_layers, c.heads, 1, c.head_dim)
        zeros = torch.zeros(shape, device=device)
        return zeros, zeros.clone(), torch.zeros(batch, 1, dtype=torch.int64, device=device)


class LanguageModel(nn.Module):
    """The VSAR prior p(y): a decoder-only Transformer over target-side text (paper §3.2),
    trained before and frozen during VSAR. Same width as the encoder-decoder, its own weights."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = Embeddings(c)
        self.positions = nn.Embedding(c.max_positions, c.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(c, cross=False) for _ in range(c.prior_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.output_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, tokens_in: Tensor) -> Tensor:
        """Next-token logits [B, T, V] for `tokens_in` (ids [B, T] or distributions [B, T, V])."""
        t = tokens_in.shape[1]
        positions = torch.arange(t, device=tokens_in.device)
        x = self.dropout(self.embeddings.embed(tokens_in) + self.positions(positions)[None])
        bias = causal_mask(t, tokens_in.device)[None, None]
        for block in (cast(DecoderBlock, b) for b in self.blocks):
            k, v = block.self_attn.keys_values(block.norm1(x))
            x = block(x, k, v, bias, None, None, None)
        return self.norm(x) @ self.embeddings.tokens.weight.T + self.output_bias


def sequence_loss(logits: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    """Mean token cross-entropy (nats) of `logits` [B, T, V] against `targets` [B, T], padding ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)
