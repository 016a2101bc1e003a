"""Choosing which decoded hypotheses a Paraphrase call returns, and in what order.

Why Facet's own code: decoding (`decoding`) and candidate selection are the serving product of
the paraphrase capability: a user asks for `n` paraphrases that are really paraphrases (not the
source again), different from each other (no two above a pairwise self-BLEU cap, the issue's
diversity guarantee) and scored (log-probability, BLEU to the source, similarity), so these
rules live here, tested, beside the decoder. No gRPC, no model: text in, candidates out.

- Normalisation (`normalise`), used for "same as the source" and "duplicate": the text the
  paraphraser's uncased WordPiece can tell apart (BERT's BasicTokenizer, Devlin et al. 2019: NFD,
  accents removed, lowercased, punctuation split from words): lowercase, accents removed, a space
  around every punctuation mark, whitespace collapsed, punctuation and spaces at both ends
  stripped. "How do I learn Python?" and "how do i learn python" are the same sentence.
- BLEU (`bleu`): sacreBLEU's sentence BLEU (Post 2018, "A Call for Clarity in Reporting BLEU
  Scores"), 0-100, with its defaults for one sentence: the `13a` tokenizer, 4-gram BLEU with
  effective order (n-gram orders longer than the hypothesis are left out) and `exp` smoothing
  (Chen & Cherry 2014, "A Systematic Comparison of Smoothing Techniques for Sentence-Level BLEU",
  method 3: the k-th zero n-gram precision counts as 1 / 2**k), case-insensitive (the model's
  output is lowercase). Equal to `sacrebleu.sentence_bleu(hypothesis, [reference], lowercase=True).score`.
- Pairwise self-BLEU (`pairwise_bleu`) is BLEU in both directions, the larger one: BLEU is not
  symmetric, and the cap must hold whichever of two paraphrases is read as the reference.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

from sacrebleu.metrics import BLEU

ORDER_KEYS = ("logprob", "similarity", "source_bleu")

_BLEU = BLEU(lowercase=True, tokenize="13a", smooth_method="exp", effective_order=True)
_SPACES = re.compile(r"\s+")


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def normalise(text: str) -> str:
    """The form two texts are compared in for "same as the source" and "duplicate" (module docstring).

    Example:
        >>> normalise("  How do I learn   Python? ")
        'how do i learn python'
        >>> normalise("Café, e-mail!")
        'cafe , e - mail'
    """
    decomposed = unicodedata.normalize("NFD", text.lower())
    kept = "".join(f" {c} " if _is_punctuation(c) else c for c in decomposed if unicodedata.category(c) != "Mn")
    words = _SPACES.sub(" ", kept).strip().split(" ")
    start, end = 0, len(words)
    while start < end and (not words[start] or all(_is_punctuation(c) for c in words[start])):
        start += 1
    while end > start and all(_is_punctuation(c) for c in words[end - 1]):
        end -= 1
    return " ".join(words[start:end])


def bleu(hypothesis: str, reference: str) -> float:
    """sacreBLEU sentence BLEU of `hypothesis` against the one `reference`, 0-100 (module docstring).

    Example:
        >>> round(bleu("the cat sat on the mat", "The cat sat on a mat."), 2)
        45.48
    """
    return min(
        100.0, float(_BLEU.sentence_score(hypothesis, [reference]).score)
    )  # 100 can come out as 100.00000000000004


def pairwise_bleu(a: str, b: str) -> float:
    """Self-BLEU of two candidates, 0-100: the larger of BLEU(a | b) and BLEU(b | a)."""
    return max(bleu(a, b), bleu(b, a))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One paraphrase candidate.

    Attributes:
        text: the detokenized paraphrase.
        token_ids: its token ids (no [CLS]/[SEP]).
        logprob: sum of its tokens' log-probabilities under the paraphraser (natural log, <= 0).
        similarity: cosine similarity of its embedding and the source's, in [-1, 1]; None until
            the caller has computed it (the service does so for the kept candidates only).
        source_bleu: BLEU to the source, 0-100 (`bleu(text, source)`); None until computed:
            `select` fills it in for every kept candidate.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    logprob: float = 0.0
    similarity: float | None = None
    source_bleu: float | None = None


@dataclasses.dataclass(frozen=True)
class Selection:
    """What `select` kept and why it dropped the others.

    Attributes:
        kept: at most `n` candidates, in the order given, each with `source_bleu` set.
        dropped_same_as_source: candidates equal to the source after `normalise`.
        dropped_duplicate: candidates equal (after `normalise`) to an earlier one that was not
            itself the source.
        dropped_too_similar: candidates whose pairwise self-BLEU with a kept one is over the cap.
        considered: candidates looked at (selection stops once `n` are kept);
            `considered == len(kept) + dropped_same_as_source + dropped_duplicate + dropped_too_similar`.
    """

    kept: tuple[Candidate, ...]
    dropped_same_as_source: int
    dropped_duplicate: int
    dropped_too_similar: int
    considered: int


def select(source: str, candidates: Sequence[Candidate], n: int, max_pairwise_bleu: float) -> Selection:
    """Keep, in the given order (best first), up to `n` candidates that are paraphrases and differ.

    Greedy in order: a candidate is dropped when it equals the source after `normalise`, when it
    equals an earlier candidate after `normalise`, or when its `pairwise_bleu` with any candidate
    kept so far is above `max_pairwise_bleu`; otherwise it is kept. So every pair of kept
    candidates has self-BLEU <= the cap, and none is the source. Fewer than `n` may remain.

    Args:
        source: the sentence being paraphrased (as the user sent it, or as truncated).
        candidates: best first (e.g. `decoding.generate`'s order).
        n: the most candidates to keep, >= 1.
        max_pairwise_bleu: the cap, 0-100 (sacreBLEU's scale); 100 lets any two distinct
            candidates through.

    Returns:
        a `Selection`; its kept candidates carry `source_bleu = bleu(text, source)`.

    Raises:
        ValueError: n < 1, or the cap outside [0, 100] (naming the argument).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= max_pairwise_bleu <= 100.0:  # NaN fails too
        raise ValueError(f"max_pairwise_bleu must be in [0, 100] (sacreBLEU's scale), got {max_pairwise_bleu}")
    source_form = normalise(source)
    seen: set[str] = set()
    kept: list[Candidate] = []
    same = duplicate = similar = considered = 0
    for candidate in candidates:
        if len(kept) == n:
            break
        considered += 1
        form = normalise(candidate.text)
        if form == source_form:
            same += 1
            continue
        if form in seen:
            duplicate += 1
            continue
        seen.add(form)
        if any(pairwise_bleu(candidate.text, other.text) > max_pairwise_bleu for other in kept):
            similar += 1
            continue
        if candidate.source_bleu is None:
            candidate = dataclasses.replace(candidate, source_bleu=bleu(candidate.text, source))
        kept.append(candidate)
    return Selection(tuple(kept), same, duplicate, similar, considered)


def order(candidates: Iterable[Candidate], by: str) -> list[Candidate]:
    """Sort candidates for the reply (stable: equal keys keep their order).

    Args:
        candidates: the candidates (e.g. `Selection.kept`).
        by: "logprob" (most probable first), "similarity" (most similar to the source first) or
            "source_bleu" (ascending: the least copied from the source first); a candidate whose
            key is None (not computed) goes last.

    Returns:
        a new list.

    Raises:
        ValueError: `by` is not one of `ORDER_KEYS`.
    """
    if by not in ORDER_KEYS:
        raise ValueError(f"order_by must be one of {', '.join(ORDER_KEYS)}; got {by!r}")
    descending = by != "source_bleu"

    def key(candidate: Candidate) -> tuple[bool, float]:
        value = getattr(candidate, by)
        if value is None or math.isnan(value):
            return (True, 0.0)
        return (False, -value if descending else value)

    return sorted(candidates, key=key)
