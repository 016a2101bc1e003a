"""Real text for the scenarios: RAR-b sentences from the benchmark data (`../shared/data`)."""

from __future__ import annotations

import ast
import csv
import functools
import os
from pathlib import Path

DATA_ENV = "FACET_LOAD_DATA"
# ../shared/data beside the checkout, as the tests and evaluations read it.
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Sentences read per RAR-b file: plenty of distinct inputs, a fast start.
ROWS_PER_FILE = 400


def data_dir() -> Path:
    """The benchmark data directory: `FACET_LOAD_DATA` (`facet load --data`), else `../shared/data`."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


@functools.cache
def rarb_sentences(max_chars: int = 400) -> tuple[tuple[str, str], ...]:
    """(sentence, source) pairs from RAR-b's multiple-choice files under the data directory
    (`read_rarb(data_dir() / "rarb-mcr")`), read once per process.

    Raises:
        FileNotFoundError, ValueError: as `read_rarb`.
    """
    return read_rarb(data_dir() / "rarb-mcr", max_chars)


def read_rarb(folder: Path, max_chars: int = 400) -> tuple[tuple[str, str], ...]:
    """(sentence, source) pairs from RAR-b's multiple-choice files: queries and candidate
    answers, without the task instructions; `source` is the file's task, e.g. "physicaliqa".

    Args:
        folder: the `rarb-mcr` folder (its `*-test.csv` files are read, `ROWS_PER_FILE` rows each).
        max_chars: longer sentences are left out.
    Returns:
        The pairs, in file order (the same every run).
    Raises:
        FileNotFoundError: no `*-test.csv` in `folder` (the message names it and `--data`).
        ValueError: a file without RAR-b's `queries` and `documents` columns, or none with a
            sentence (naming the file or folder).
    """
    files = sorted(folder.glob("*-test.csv"))
    if not files:
        raise FileNotFoundError(
            f"no RAR-b data in {folder} (no *-test.csv): pass `facet load --data DIR` (or set {DATA_ENV}) "
            "with rarb-mcr/ in it"
        )
    csv.field_size_limit(1 << 24)
    pairs: list[tuple[str, str]] = []
    for path in files:
        source = path.name.removesuffix("-test.csv").split("-", 1)[0]
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"queries", "documents"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{path} is not a RAR-b MCR file: it needs the columns queries and documents")
            for i, record in enumerate(reader):
                if i >= ROWS_PER_FILE:
                    break
                try:
                    documents = [str(d) for d in ast.literal_eval(record["documents"])]
                except (ValueError, SyntaxError, TypeError):
                    raise ValueError(f"{path}: row {i + 1}'s documents is not a list of strings") from None
                texts = [record["queries"] or "", *documents]
                pairs.extend((t.strip(), source) for t in texts if t.strip() and len(t) <= max_chars)
    if not pairs:
        raise ValueError(f"no RAR-b sentence of at most {max_chars} characters in {folder}")
    return tuple(pairs)


@functools.cache
def quora_questions(max_chars: int = 200) -> tuple[str, ...]:
    """Questions of the Quora paraphrase test split (`paraphrase/quora_50k/test_source.txt` under
    the data directory), read once per process: the sentences a paraphrase user sends.

    Raises:
        FileNotFoundError: the file is missing (the message names it and `--data`).
        ValueError: no question of at most `max_chars` characters in it.
    """
    path = data_dir() / "paraphrase" / "quora_50k" / "test_source.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no Quora paraphrase data at {path}: pass `facet load --data DIR` (or set {DATA_ENV})")
    questions = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if 0 < len(line.strip()) <= max_chars)
    if not questions:
        raise ValueError(f"no question of at most {max_chars} characters in {path}")
    return questions
