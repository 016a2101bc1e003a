"""The service's tokenizer on the default model's real tokenizer.json (no server): user text is
plain text, long texts are cut before tokenizing with the same tokens, blank is one rule."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from services.retrieval.tokenization import TextTokenizer
from services.runtime.errors import InvalidArgument
from services.text import is_blank
from training.retrieval.export import packaged_minilm_dir

MAX_SEQ_LENGTH = 256


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX_SEQ_LENGTH)


@pytest.fixture(scope="module")
def special_ids() -> dict[str, int]:
    raw = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    return {t.content: i for i, t in raw.get_added_tokens_decoder().items() if t.special}


def test_special_token_strings_in_user_text_are_plain_characters(tokenizer: TextTokenizer, special_ids: dict[str, int]) -> None:
    assert {"[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"} <= set(special_ids)
    text = " ".join(special_ids) + " " + "".join(special_ids) + " [cls] [Sep]"
    batch = tokenizer([text, "[CLS]", "[PAD][PAD]"])
    for row, count in zip(batch.input_ids, batch.token_counts, strict=True):
        ids = row[:count].tolist()
        # the template's [CLS] ... [SEP] around the text, and no special id inside it
        assert ids[0] == special_ids["[CLS]"] and ids[-1] == special_ids["[SEP]"]
        assert not set(ids[1:-1]) & set(special_ids.values()), ids


def test_cut_before_tokenizing_keeps_the_whole_texts_tokens(tokenizer: TextTokenizer) -> None:
    reference = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    reference.no_padding()
    reference.encode_special_tokens = True
    reference.enable_truncation(MAX_SEQ_LENGTH)
    texts = [
        "word " * 20_000,
        "internationalization " * 5_000,  # long words the cut goes through
        "a" + " " * 99_999 + "b",  # whitespace only past the cut: the whole text is tokenized
        "x" * 100_000,  # one word, no whitespace
        "a.b" * 30_000,  # punctuation, no whitespace
        "北京" * 30_000,  # every CJK character is a token
        "e\u0301 " * 30_000,  # combining marks
        "short",
    ]
    batch = tokenizer(texts)
    for text, row, count, truncated in zip(texts, batch.input_ids, batch.token_counts, batch.truncated, strict=True):
        expected = reference.encode(text)
        assert row[:count].tolist() == expected.ids
        assert truncated == bool(expected.overflowing)


def test_truncate_false_refuses_long_text(tokenizer: TextTokenizer) -> None:
    with pytest.raises(InvalidArgument, match="truncate=True"):
        tokenizer(["word " * 300], truncate=False)
    assert tokenizer(["word " * 250], truncate=False).token_counts.tolist() == [252]


def test_content_tokens_count_a_prompt_without_the_template(tokenizer: TextTokenizer) -> None:
    assert tokenizer.special_tokens == 2
    assert tokenizer.content_tokens("cat " * 300) == 300
    assert tokenizer.content_tokens("[SEP]") == 3  # "[", "sep", "]"


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t\r\n\x0b\x0c", "\u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000", "\u200b\u200c\u200d\u2060\ufeff",
     "\u200e\u200f\u202a\u202e\u2066", "\x00\x1f\x7f\x85", "\u115f\u1160\u3164\uffa0\u2800", "\U000e0001\U000e0020"],
)
def test_blank_means_nothing_visible(text: str) -> None:
    assert is_blank(text)
    assert not is_blank(text + "a")
    assert not is_blank("a" + text)


@pytest.mark.parametrize("text", [".", "\u0301", "😀", "北", "_", "0", "-"])
def test_visible_characters_are_not_blank(text: str) -> None:
    assert not is_blank(text)
