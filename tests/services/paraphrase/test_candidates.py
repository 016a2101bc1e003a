"""Candidate selection and ordering (services/paraphrase/candidates.py).

BLEU expectations are worked out by hand from n-gram counts in the comments, and checked against
sacrebleu called directly (the documented settings: sentence BLEU, lowercase).
"""

from __future__ import annotations

import itertools
import math

import pytest
import sacrebleu

from services.paraphrase.candidates import Candidate, bleu, normalise, order, select

SOURCE = "How do I learn Python?"


def direct_pairwise(a: str, b: str) -> float:
    return max(
        sacrebleu.sentence_bleu(a, [b], lowercase=True).score, sacrebleu.sentence_bleu(b, [a], lowercase=True).score
    )


def test_bleu_matches_hand_counts_and_sacrebleu() -> None:
    # hypothesis vs reference, 6 tokens each: 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4,
    # 4-grams 1/3, no brevity penalty: 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** .25
    hypothesis, reference = "the cat sat on the mat", "The cat sat on a mat"
    assert bleu(hypothesis, reference) == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert bleu(hypothesis, reference) == pytest.approx(
        sacrebleu.sentence_bleu(hypothesis, [reference], lowercase=True).score
    )
    # 5 vs 6 tokens: 1-grams 4/5, 2-grams 2/4, 3-grams 1/3, 4-grams 0/2 -> exp smoothing: 1 / (2 * 2);
    # brevity penalty exp(1 - 6/5)
    hypothesis, reference = "how do i learn python", "How can I learn Python quickly"
    expected = 100 * math.exp(1 - 6 / 5) * (4 / 5 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25
    assert bleu(hypothesis, reference) == pytest.approx(expected, abs=1e-6)
    assert bleu(hypothesis, reference) == pytest.approx(
        sacrebleu.sentence_bleu(hypothesis, [reference], lowercase=True).score
    )
    assert bleu("a copy", "A copy") == 100.0
    assert bleu("nothing shared", "at all here") == 0.0


def test_normalise_ignores_case_spacing_accents_and_end_punctuation() -> None:
    assert normalise(SOURCE) == normalise("how do i learn python") == "how do i learn python"
    assert normalise("  Where is the   café?! ") == normalise("where is the cafe") == "where is the cafe"
    assert normalise("e-mail me, please.") == normalise("e - mail me , please") == "e - mail me , please"
    assert normalise("how do i learn python") != normalise("how do i learn pythons")


def test_select_drops_the_source_and_duplicates_and_says_why() -> None:
    candidates = [
        Candidate("how do i learn python", logprob=-1.0),  # the source after normalisation
        Candidate("what is the best way to learn python", logprob=-2.0),
        Candidate("What is the best way to learn Python?", logprob=-2.5),  # duplicate of the previous
        Candidate("how can i study python", logprob=-3.0),
    ]
    selection = select(SOURCE, candidates, n=5, max_pairwise_bleu=100.0)
    assert [c.text for c in selection.kept] == ["what is the best way to learn python", "how can i study python"]
    assert (selection.dropped_same_as_source, selection.dropped_duplicate, selection.dropped_too_similar) == (1, 1, 0)
    assert selection.considered == 4
    # each kept candidate carries its BLEU to the source
    for kept in selection.kept:
        assert kept.source_bleu == pytest.approx(sacrebleu.sentence_bleu(kept.text, [SOURCE], lowercase=True).score)


CANDIDATES = [
    "what is the best way to learn python",
    "what is the best way to learn python quickly",
    "what is the best way to learn python fast",
    "how can i learn python",
    "how can i learn python quickly",
    "how should i start learning python",
    "what are good ways to learn python",
    "where can i learn python programming",
    "is python easy to learn",
    "what is the best way to study python",
]


@pytest.mark.parametrize("cap", [20.0, 40.0, 60.0])
def test_no_two_kept_candidates_are_above_the_pairwise_bleu_cap(cap: float) -> None:
    selection = select(SOURCE, [Candidate(t) for t in CANDIDATES], n=10, max_pairwise_bleu=cap)
    texts = [c.text for c in selection.kept]
    assert texts[0] == CANDIDATES[0]  # the best is always kept
    for a, b in itertools.combinations(texts, 2):
        assert direct_pairwise(a, b) <= cap, (a, b)
    # every dropped one is too similar to a kept one that came before it
    for i, text in enumerate(CANDIDATES):
        if text not in texts:
            assert any(direct_pairwise(text, k) > cap for k in texts if CANDIDATES.index(k) < i)
    assert selection.dropped_too_similar == len(CANDIDATES) - len(texts) > 0


def test_a_lower_cap_keeps_fewer_candidates() -> None:
    kept = [len(select(SOURCE, [Candidate(t) for t in CANDIDATES], 10, cap).kept) for cap in (20.0, 40.0, 60.0, 100.0)]
    assert kept == sorted(kept) and kept[-1] == len(CANDIDATES) and kept[0] < kept[-1]


def test_select_stops_at_n_and_counts_what_it_considered() -> None:
    candidates = [Candidate(SOURCE.lower()), *(Candidate(t) for t in CANDIDATES)]
    selection = select(SOURCE, candidates, n=2, max_pairwise_bleu=40.0)
    assert len(selection.kept) == 2
    s = selection
    assert s.considered == len(s.kept) + s.dropped_same_as_source + s.dropped_duplicate + s.dropped_too_similar
    assert s.considered < len(candidates)


@pytest.mark.parametrize(
    ("n", "cap", "field"),
    [
        (0, 50.0, "n"),
        (2, -1.0, "max_pairwise_bleu"),
        (2, 101.0, "max_pairwise_bleu"),
        (2, math.nan, "max_pairwise_bleu"),
    ],
)
def test_select_refuses_bad_arguments_naming_them(n: int, cap: float, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        select(SOURCE, [Candidate("x")], n, cap)


def test_order_by_each_key() -> None:
    a = Candidate("a", logprob=-1.0, similarity=0.7, source_bleu=40.0)
    b = Candidate("b", logprob=-3.0, similarity=0.9, source_bleu=10.0)
    c = Candidate("c", logprob=-2.0, similarity=0.8, source_bleu=25.0)
    assert [x.text for x in order([a, b, c], "logprob")] == ["a", "c", "b"]  # most probable first
    assert [x.text for x in order([a, b, c], "similarity")] == ["b", "c", "a"]  # most similar first
    assert [x.text for x in order([a, b, c], "source_bleu")] == ["b", "c", "a"]  # least copied first
    unscored = Candidate("d", logprob=-0.5)
    assert [x.text for x in order([unscored, a, b], "similarity")] == ["b", "a", "d"]  # not computed: last
    with pytest.raises(ValueError, match="^order_by .*logprob, similarity, source_bleu"):
        order([a], "length")
