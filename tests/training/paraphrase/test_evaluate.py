"""Paraphrase metrics on hand-made corpora whose values are worked out here by hand (BLEU's
clipped n-gram precisions and brevity penalty, ROUGE's overlaps), iBLEU's formula, the two
bounds, cross-checks between nltk and sacreBLEU, and the Wilcoxon helper against a known p; and
`facet eval paraphrase` against a real paraphrase server (the tiny test paraphraser)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

import sdk
from tests.services.paraphrase.fixtures import PARAPHRASER
from tests.serving import ServerProcess
from training.paraphrase.data import load_pairs
from training.paraphrase.evaluate import (
    METRIC_KEYS,
    bounds,
    evaluate,
    format_table,
    main,
    paired_test,
    paper_tokens,
    sentence_scores,
    shuffled,
)


def test_an_output_equal_to_its_reference_scores_100_and_a_disjoint_one_0() -> None:
    same = evaluate(["the cat sat on the mat"], ["a dog ran away"], ["the cat sat on the mat"])
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "rouge1", "rouge2", "rougeL"):
        assert same[key] == pytest.approx(100.0), key
    assert same["self_bleu"] == pytest.approx(0.0, abs=1e-9)  # no word of the source
    disjoint = evaluate(["a dog ran away"], ["the cat sat on the mat"], ["the cat sat on the mat"])
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "rouge1", "rouge2", "rougeL"):
        assert disjoint[key] == pytest.approx(0.0, abs=1e-9), key


def test_corpus_bleu_follows_the_clipped_precisions_and_the_paper_weights() -> None:
    # "the cat sat down" against "the cat sat up": unigrams 3/4, bigrams 2/3, trigrams 1/2,
    # 4-grams 0/1; same length, so no brevity penalty. The paper's weights: (1), (.5, .5),
    # (.33, .33, .34), (.25 x 4); an order without a match makes the geometric mean 0.
    m = evaluate(["the cat sat down"], ["something else entirely"], ["the cat sat up"])
    assert m["bleu1"] == pytest.approx(75.0)
    assert m["bleu2"] == pytest.approx(100 * math.sqrt(3 / 4 * 2 / 3))
    assert m["bleu3"] == pytest.approx(
        100 * math.exp(0.33 * math.log(3 / 4) + 0.33 * math.log(2 / 3) + 0.34 * math.log(1 / 2))
    )
    assert m["bleu4"] == pytest.approx(0.0, abs=1e-9)


def test_a_short_output_pays_the_brevity_penalty() -> None:
    # 2 tokens against a 4-token reference, every unigram right: BP = exp(1 - 4/2)
    m = evaluate(["the cat"], ["x"], ["the cat sat down"])
    assert m["bleu1"] == pytest.approx(100 * math.exp(1 - 4 / 2))


def test_bleu_is_corpus_level_not_a_mean_of_sentences() -> None:
    # sentence 1: 2 of 2 unigrams; sentence 2: 0 of 2 -> corpus p1 = 2/4 (a sentence mean would also
    # give .5 here, so weight them unequally): sentence 2 has 4 tokens, none right -> 2/6
    m = evaluate(["the cat", "one two three four"], ["a", "b"], ["the cat", "five six seven eight"])
    assert m["bleu1"] == pytest.approx(100 * 2 / 6)


def test_ibleu_is_point_eight_bleu_to_the_reference_minus_point_two_bleu_to_the_source() -> None:
    copy = evaluate(["how do i learn to cook"], ["how do i learn to cook"], ["what is the best recipe book"])
    assert copy["ibleu"] == pytest.approx(0.8 * 0.0 - 0.2 * 100.0)
    perfect = evaluate(["what is the best recipe book"], ["how can i learn cooking"], ["what is the best recipe book"])
    assert perfect["ibleu"] == pytest.approx(0.8 * 100.0 - 0.2 * 0.0)
    mixed = evaluate(
        ["the cat sat down", "a big red car"], ["the cat is down", "a red car"], ["the cat sat up", "a big red bus"]
    )
    assert mixed["ibleu"] == pytest.approx(0.8 * mixed["bleu4"] - 0.2 * mixed["self_bleu"])


def test_rouge_is_f1_of_the_overlaps() -> None:
    # "the cat sat" vs "the cat sat on the mat": unigram P 3/3 R 3/6; bigrams P 2/2 R 2/5; LCS 3
    m = evaluate(["the cat sat"], ["x"], ["the cat sat on the mat"])

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r)

    assert m["rouge1"] == pytest.approx(100 * f1(1, 3 / 6))
    assert m["rouge2"] == pytest.approx(100 * f1(1, 2 / 5))
    assert m["rougeL"] == pytest.approx(100 * f1(1, 3 / 6))


def test_rouge_stems_words() -> None:
    # the Porter stemmer maps "cats"/"cat" and "running"/"run" together (rouge-score, use_stemmer=True)
    m = evaluate(["cats running"], ["x"], ["cat run"])
    assert m["rouge1"] == pytest.approx(100.0)


def test_nltk_bleu4_agrees_with_sacrebleu_where_their_tokens_agree() -> None:
    # plain lowercase whole words: WordPiece and sacreBLEU's 13a give the same tokens, and every
    # n-gram order has a match, so the two BLEU-4 implementations compute the same number
    outputs = [
        "the man is riding a horse on the beach",
        "a woman is cutting an onion in the kitchen",
        "two dogs play in the park",
    ]
    references = [
        "a man is riding a horse on a beach",
        "the woman is cutting an onion in a kitchen",
        "two dogs play in a green park",
    ]
    m = evaluate(outputs, ["x", "y", "z"], references)
    assert m["sacrebleu"] == pytest.approx(m["bleu4"], rel=1e-9)
    assert [len(t) for t in paper_tokens(outputs)] == [len(o.split()) for o in outputs]


def test_evaluation_uses_the_papers_uncased_wordpiece_tokens() -> None:
    assert paper_tokens(["What's UNAFFABLE?"]) == [["what", "'", "s", "una", "##ffa", "##ble", "?"]]
    # case does not matter to any metric
    lower = evaluate(
        ["what is the best way to learn python?"], ["how do i learn python?"], ["how can i learn python fast?"]
    )
    upper = evaluate(
        ["What is the best way to learn Python?"], ["How do I learn Python?"], ["How can I learn Python fast?"]
    )
    for key in METRIC_KEYS:
        assert upper[key] == pytest.approx(lower[key]), key


def test_sacrebleu_reads_wordpiece_spaced_contractions_as_the_reference_spells_them() -> None:
    # `tokenizers` decodes WordPiece as "what ' s" / "don ' t"; transformers' decode (the paper's)
    # writes "what's" / "don't": the same sentence must score 100 either way
    spaced = "what ' s the best way to learn python ? i don ' t know ."
    reference = "What's the best way to learn Python? I don't know."
    m = evaluate([spaced], ["x"], [reference])
    assert m["sacrebleu"] == pytest.approx(100.0)
    assert m["bleu4"] == pytest.approx(100.0) and m["rougeL"] == pytest.approx(100.0)
    assert sentence_scores([spaced], ["x"], [reference]).bleu[0] == pytest.approx(100.0)


def test_copy_the_source_bound_has_self_bleu_100() -> None:
    sources = ["how do i learn python", "what is the capital of france", "why is the sky blue"]
    references = [
        "what is the best way to learn python",
        "which city is the capital of france",
        "what makes the sky blue",
    ]
    b = bounds(sources, references)
    copy = b["copy_source"]
    assert copy["self_bleu"] == pytest.approx(100.0)
    assert copy["ibleu"] == pytest.approx(0.8 * copy["bleu4"] - 20.0)
    assert copy == evaluate(sources, sources, references)


def test_shuffled_target_bound_scores_a_fixed_permutation_of_the_references() -> None:
    sources = [f"source sentence number {i}" for i in range(20)]
    references = [f"reference {word} sentence" for word in "abcdefghijklmnopqrst"]
    permuted = shuffled(references)
    assert sorted(permuted) == sorted(references)
    assert all(output != own for output, own in zip(permuted, references, strict=True))  # no sentence keeps its own
    assert shuffled(references) == permuted  # the seed is fixed
    b = bounds(sources, references)
    assert b["shuffled_target"] == evaluate(permuted, sources, references)
    assert b["shuffled_target"]["bleu4"] < 100.0


def test_sentence_scores_are_per_sentence_bleu_and_ibleu() -> None:
    s = sentence_scores(
        ["the cat sat on the mat", "a dog"],
        ["the cat sat on the mat", "one two"],
        ["the cat sat on the mat", "three four"],
    )
    assert s.bleu.shape == (2,) and s.bleu.dtype == np.float64
    assert s.bleu[0] == pytest.approx(100.0) and s.self_bleu[0] == pytest.approx(100.0)
    assert s.bleu[1] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(s.ibleu, 0.8 * s.bleu - 0.2 * s.self_bleu)
    assert type(s).from_dict(s.to_dict()).bleu.tolist() == s.bleu.tolist()


def test_wilcoxon_on_six_pairs_all_improved_has_p_two_over_64() -> None:
    # all 6 differences positive and distinct: the exact two-sided p is 2 * (1 / 2**6)
    a = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    b = [11.0, 22.0, 33.0, 44.0, 55.0, 66.0]
    t = paired_test(a, b)
    assert t.p_value == pytest.approx(2 / 2**6)
    assert t.statistic == 0.0 and t.pairs == 6 and t.nonzero == 6 and t.b_better


def test_wilcoxon_drops_ties_and_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 100, 200)
    b = a + rng.normal(2.0, 10.0, 200)
    b[:30] = a[:30]  # unchanged sentences: zero differences, dropped
    t = paired_test(a, b)
    expected = wilcoxon(b[30:], a[30:], alternative="two-sided")
    assert t.nonzero == 170 and t.pairs == 200
    assert t.p_value == pytest.approx(float(expected.pvalue))
    assert t.statistic == pytest.approx(float(expected.statistic))


def test_wilcoxon_of_identical_systems_is_p_one() -> None:
    t = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert t.p_value == 1.0 and t.nonzero == 0


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="aligned"):
        evaluate(["a"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        evaluate([], [], [])
    with pytest.raises(TypeError, match="outputs"):
        evaluate("a cat", ["a"] * 5, ["a"] * 5)
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_test([1.0, float("nan")], [1.0, 2.0])


def test_table_has_a_row_per_system_and_a_column_per_metric() -> None:
    m = evaluate(["the cat sat"], ["x"], ["the cat sat"])
    table = format_table([("model", m), ("copy-the-source", m)]).splitlines()
    assert table[0].startswith("| system | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | sacreBLEU | self-BLEU | iBLEU |")
    assert table[2].startswith("| model | 100.00 |") and table[3].startswith("| copy-the-source |")


# -- facet eval paraphrase through a real paraphrase server ----------------------------------------


@pytest.fixture(scope="module")
def paraphrase_address(start_paraphrase_server: Callable[..., ServerProcess]) -> str:
    return start_paraphrase_server().address


@pytest.mark.integration
def test_eval_command_decodes_the_test_split_through_the_service(
    paraphrase_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results.json"
    argv = ["--model", PARAPHRASER, "--limit", "12", "--address", paraphrase_address, "--json", str(results)]
    assert main(argv) == 0
    payload = json.loads(results.read_text(encoding="utf-8"))
    pairs = load_pairs("quora", "test")[:12]
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    with sdk.Client(paraphrase=paraphrase_address) as client:  # the same calls, made here directly
        direct = [client.paraphrase(s, n=1, strategy="greedy", truncate=True, model=PARAPHRASER) for s in sources]
    assert payload["outputs"] == [r[0].text if len(r) else s for r, s in zip(direct, sources, strict=True)]
    assert payload["copies"] == sum(len(r) == 0 for r in direct)
    assert payload["sentences"] == 12 and set(METRIC_KEYS) <= set(payload["metrics"])
    assert payload["bounds"]["copy_source"]["self_bleu"] == pytest.approx(100.0)
    assert payload["metrics"]["ibleu"] == pytest.approx(
        0.8 * payload["metrics"]["bleu4"] - 0.2 * payload["metrics"]["self_bleu"]
    )
    out = capsys.readouterr().out
    assert f"| {PARAPHRASER} (greedy, through the service) |" in out and "| copy-the-source |" in out
    assert len(references) == 12


@pytest.mark.integration
def test_eval_command_refuses_a_model_the_service_does_not_serve(
    paraphrase_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--model", "no-such-paraphraser", "--limit", "2", "--address", paraphrase_address]) == 1
    err = capsys.readouterr().err
    assert "does not serve no-such-paraphraser" in err and PARAPHRASER in err


def test_eval_command_says_when_the_service_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.serving import free_port

    assert main(["--model", PARAPHRASER, "--limit", "2", "--address", f"127.0.0.1:{free_port()}"]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_eval_command_refuses_a_negative_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", PARAPHRASER, "--limit", "-1"]) == 2
    assert "--limit must be >= 0" in capsys.readouterr().err
