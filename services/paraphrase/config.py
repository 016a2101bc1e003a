"""The `[paraphrase]` config section (`FACET_PARAPHRASE_*`): the default paraphraser, the
embedding model that scores similarity, and the limits of every Paraphrase call (checked before
any tokenizing or decoding)."""

from __future__ import annotations

import dataclasses
import math

from services.runtime.config import check


@dataclasses.dataclass(frozen=True)
class ParaphraseConfig:
    """Attributes:
    model: the paraphraser (a decoder step, kind "paraphraser", with its encoder beside it in the
        model repository) a call without `model` uses; the service does not start without it
        (`facet paraphrase build` builds it). Every other paraphraser in the repository is
        served too, by name.
    embedding_model: the embedding model (the retrieval capability's, in the same repository)
        whose cosine similarity of source and paraphrase is each candidate's `similarity`.
    max_text_chars: characters of the text to paraphrase (the model reads at most its
        max_length tokens, 20 by default: this bounds the tokenizer's work before that check).
    max_n: paraphrases one call may ask for.
    max_beam_width: beams of beam and diverse beam search: the decoder runs this many rows per
        step for the call.
    default_beam_width: beams when a call sets none: max(2n, this), at most max_beam_width (twice
        the paraphrases asked for, so that n are left after the selection drops copies of the
        source and near-duplicates).
    max_pairwise_bleu: the diversity cap a call without `max_pairwise_bleu` gets: no two returned
        paraphrases have a sentence BLEU (sacreBLEU, 0..100) to each other above it.
    max_sample_rows: rows one sampling call decodes side by side (it draws up to this many
        samples to find n that pass the selection; at least max_n).
    """

    model: str = "ddl-vsar-quora"
    embedding_model: str = "all-minilm-l6-v2"
    max_text_chars: int = 1000
    max_n: int = 10
    max_beam_width: int = 16
    default_beam_width: int = 4
    max_pairwise_bleu: float = 70.0
    max_sample_rows: int = 32

    def __post_init__(self) -> None:
        check(bool(self.model), "paraphrase.model must be set")
        check(bool(self.embedding_model), "paraphrase.embedding_model must be set")
        for key in ("max_text_chars", "max_n", "max_beam_width", "default_beam_width", "max_sample_rows"):
            check(getattr(self, key) >= 1, f"paraphrase.{key} must be >= 1, got {getattr(self, key)}")
        check(
            self.default_beam_width <= self.max_beam_width,
            f"paraphrase.default_beam_width ({self.default_beam_width}) must be <= paraphrase.max_beam_width ({self.max_beam_width})",
        )
        check(
            self.max_n <= self.max_beam_width,
            f"paraphrase.max_n ({self.max_n}) must be <= paraphrase.max_beam_width ({self.max_beam_width}): beam search returns at most its beams",
        )
        check(
            self.max_sample_rows >= self.max_n,
            f"paraphrase.max_sample_rows ({self.max_sample_rows}) must be >= paraphrase.max_n ({self.max_n})",
        )
        check(
            math.isfinite(self.max_pairwise_bleu) and 0.0 <= self.max_pairwise_bleu <= 100.0,
            f"paraphrase.max_pairwise_bleu must be in [0, 100] (sacreBLEU's scale), got {self.max_pairwise_bleu}",
        )
