"""The paraphrase data: dedupe (no test or validation sentence in train), seeded splits, the
label-scarce split's counts, and the shortlisted BERT WordPiece tokenizer."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from training.paraphrase.data import (
    VALIDATION_PAIRS,
    Splits,
    build_tokenizer,
    encode_texts,
    label_split,
    load_pairs,
    load_splits,
    normalise,
    special_ids,
)


@functools.cache
def splits(dataset: str, data_dir: Path) -> Splits:
    return load_splits(dataset, data_dir)


@pytest.mark.parametrize("dataset", ["quora", "mscoco"])
def test_no_test_or_validation_sentence_appears_in_train(dataset: str, rarb_data: Path) -> None:
    data_dir = rarb_data.parent
    s = splits(dataset, data_dir)
    raw_test = load_pairs(dataset, "test", data_dir)
    test_sentences = {normalise(x) for pair in raw_test for x in pair}
    validation_sentences = {normalise(x) for pair in s.validation for x in pair}
    train_sentences = {normalise(x) for pair in s.train for x in pair}
    assert not train_sentences & test_sentences
    assert not train_sentences & validation_sentences
    assert not validation_sentences & test_sentences
    assert list(s.test) == raw_test and len(s.validation) == VALIDATION_PAIRS
    raw_train = load_pairs(dataset, "train", data_dir)
    assert len(s.train) + len(s.validation) + s.dropped_for_test + s.dropped_for_validation == len(raw_train)
    assert set(s.train) | set(s.validation) <= set(raw_train)


def test_quora_dedupe_drops_the_pairs_whose_questions_recur_in_test(rarb_data: Path) -> None:
    """SOURCE.txt: 3,428 of the 7,494 distinct Quora test sentences also occur in train."""
    s = splits("quora", rarb_data.parent)
    assert s.dropped_for_test > 3000
    assert s.dropped_for_validation > 0


def test_normalise_ignores_case_spacing_and_punctuation_at_the_ends() -> None:
    assert normalise("  How do I  learn\tPython?? ") == normalise("how do i learn python") == "how do i learn python"
    assert normalise("What's C++?") == "what's c++"  # inner punctuation stays
    assert normalise("Why?") != normalise("Why not?")


def test_splits_are_deterministic(rarb_data: Path) -> None:
    again = load_splits("quora", rarb_data.parent)
    assert again == splits("quora", rarb_data.parent)


def test_label_fraction_counts_and_seeds(rarb_data: Path) -> None:
    pairs = splits("quora", rarb_data.parent).train
    tenth = label_split(pairs, 0.1, seed=1)
    assert len(tenth.labelled) == round(0.1 * len(pairs))
    assert len(tenth.unlabelled) == len(pairs) - len(tenth.labelled)
    labelled = set(tenth.labelled)
    rest_sources = [p[0] for p in pairs if p not in labelled]
    assert sorted(tenth.unlabelled) == sorted(rest_sources)  # the sources of the other pairs, not their targets
    assert label_split(pairs, 0.1, seed=1) == tenth
    assert label_split(pairs, 0.1, seed=2).labelled != tenth.labelled
    full = label_split(pairs, 1.0, seed=1)
    assert sorted(full.labelled) == sorted(pairs)
    assert full.unlabelled == tuple(p[0] for p in full.labelled)  # 100%: their sources are the unlabelled text


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_a_label_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="label_fraction"):
        label_split([("a", "b")], fraction)


def test_an_unknown_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset"):
        load_splits("wikianswers", tmp_path)


@functools.cache
def corpus_tokenizer(data_dir: Path) -> tuple[Tokenizer, list[str]]:
    sentences = [s for pair in load_pairs("quora", "train", data_dir)[:400] for s in pair]
    return build_tokenizer(sentences), sentences


def test_tokenizer_special_ids_and_no_special_tokens_in_encode(rarb_data: Path) -> None:
    tokenizer, _ = corpus_tokenizer(rarb_data.parent)
    assert special_ids(tokenizer) == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert tokenizer.id_to_token(4) == "[MASK]"
    ids = tokenizer.encode("How do I learn Python?").ids
    assert ids and not set(ids) & {0, 1, 2, 3, 4}
    assert tokenizer.decode(ids) == "how do i learn python?"
    long = tokenizer.encode(" ".join(["what"] * 300)).ids
    assert len(long) == 300  # no truncation, no padding


def test_corpus_words_segment_exactly_as_with_the_full_bert_vocabulary(rarb_data: Path) -> None:
    from training.retrieval.export import packaged_minilm_dir

    full = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    full.no_truncation()
    full.no_padding()
    tokenizer, sentences = corpus_tokenizer(rarb_data.parent)
    assert tokenizer.get_vocab_size() < full.get_vocab_size()
    for sentence in sentences:
        assert tokenizer.encode(sentence).tokens == full.encode(sentence, add_special_tokens=False).tokens
    # a word outside the corpus still segments (single-character pieces), without [UNK]
    assert "[UNK]" not in tokenizer.encode("zyzzyva quixotically").tokens


def test_min_count_shortlists_rarer_pieces(rarb_data: Path) -> None:
    _, sentences = corpus_tokenizer(rarb_data.parent)
    assert build_tokenizer(sentences, min_count=3).get_vocab_size() < build_tokenizer(sentences).get_vocab_size()
    with pytest.raises(ValueError, match="min_count"):
        build_tokenizer(sentences, min_count=0)


def test_encode_texts_truncates_to_max_length(rarb_data: Path) -> None:
    tokenizer, _ = corpus_tokenizer(rarb_data.parent)
    ids = encode_texts(tokenizer, ["what is the best way?", " ".join(["what"] * 40)], max_length=20)
    assert [tokenizer.id_to_token(i) for i in ids[0]] == ["what", "is", "the", "best", "way", "?"]
    assert len(ids[1]) == 20
    with pytest.raises(ValueError, match="max_length"):
        encode_texts(tokenizer, ["x"], max_length=0)
