"""The question-level RAR-b split that rerankers and bi-encoders train on (issue #14 part 1)."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from training.retrieval.rarb import data_files, load_rows, rows_of_split, split_of

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "rarb-mcr"


def test_the_split_is_sha256_of_the_query_modulo_100_cut_at_60_and_80() -> None:
    for query in ("Where is the Eiffel Tower?", "", "naïve café 北京", "x" * 1000):
        bucket = int(hashlib.sha256(query.encode()).hexdigest()[:16], 16) % 100
        assert split_of(query) == ("train" if bucket < 60 else "dev" if bucket < 80 else "test")


def test_rows_sharing_a_query_never_straddle_the_split_and_the_order_does_not_matter() -> None:
    rows = load_rows(DATA / "physicaliqa-test.csv")  # 35 queries recur in PIQA
    by_query: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_query[row.query].add(split_of(row.query))
    assert sum(1 for q in by_query if sum(r.query == q for r in rows) > 1) > 0, "PIQA should have repeated queries"
    assert all(len(splits) == 1 for splits in by_query.values())
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(map(id, rows_of_split(shuffled, "dev"))) == sorted(map(id, rows_of_split(rows, "dev")))


def test_every_file_splits_about_60_20_20_and_the_three_splits_cover_every_row() -> None:
    for path in data_files(DATA):
        rows = load_rows(path)
        counts = Counter(split_of(r.query) for r in rows)
        assert sum(len(rows_of_split(rows, s)) for s in ("train", "dev", "test")) == len(rows)
        for split, share in (("train", 0.6), ("dev", 0.2), ("test", 0.2)):
            assert abs(counts[split] / len(rows) - share) < 0.04, (path.name, dict(counts))


def test_an_unknown_split_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown split 'validation'; use one of train, dev, test"):
        rows_of_split([], "validation")
