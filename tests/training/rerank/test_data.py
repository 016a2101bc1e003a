"""The reranker's training data: the RAR-b split's purity, groups, duplicates never negatives."""

from __future__ import annotations

from pathlib import Path

from training.rerank.data import Group, duplicate_components, rarb_files, rarb_groups, row_group
from training.retrieval.rarb import McrRow, load_rows, rows_of_split, split_of


def test_training_groups_hold_no_dev_or_test_query(rarb_data: Path) -> None:
    data_dir = rarb_data.parent
    train = rarb_groups(data_dir, "train", instruction_share=0.0)  # queries without the instruction: the split's key
    held_out = {
        row.query
        for path in rarb_files(data_dir)
        for split in ("dev", "test")
        for row in rows_of_split(load_rows(path), split)
    }
    train_queries = {g.query for groups in train.values() for g in groups}
    assert len(train) == 6 and all(train.values())
    assert not train_queries & held_out
    assert all(split_of(q) == "train" for q in train_queries)


def test_instruction_share_gives_both_settings(rarb_data: Path) -> None:
    groups = rarb_groups(rarb_data.parent, "dev", instruction_share=0.5, per_file=40)["alphanli-test.csv"]
    rows = {r.query: r for r in load_rows(rarb_data / "alphanli-test.csv")}
    with_instruction = [g for g in groups if g.query not in rows]
    assert 5 < len(with_instruction) < 35  # about half of 40
    assert all(any(g.query == f"{r.instruction} {r.query}" for r in rows.values()) for g in with_instruction[:3])


def test_a_long_row_keeps_its_gold_and_no_copy_of_it() -> None:
    import random

    row = McrRow("Retrieve the answer.", "Who?", ("gold", "a", "gold", "b", "c", "d", "e"), 0)
    group = row_group(row, "t.csv", with_instruction=False, max_candidates=4, rng=random.Random(0))
    assert len(group.candidates) == 4 and group.candidates[group.label] == "gold"
    assert group.candidates.count("gold") == 1


def test_duplicate_components_join_transitive_duplicates() -> None:
    components = duplicate_components([("How do I learn Python?", "What is the best way to learn Python?"),
                                       ("what is the best way to learn python?", "Best way to learn Python fast?"),
                                       ("Why is the sky blue?", "What makes the sky blue?")])  # fmt: skip
    assert components["how do i learn python?"] == components["best way to learn python fast?"]
    assert components["how do i learn python?"] != components["why is the sky blue?"]


def test_a_group_needs_two_candidates() -> None:
    import pytest

    with pytest.raises(ValueError, match="2 candidates"):
        Group("q", ("only",), 0, "t")


def test_calibration_s_general_groups_come_from_quora_held_out_pairs(rarb_data: Path) -> None:
    """The general half of the calibration pairs: Quora test-split pairs, the duplicate
    at the label among 3 other test questions, none of them the question or its duplicate again."""
    from training.rerank.data import quora_held_out_groups, quora_pairs

    data_dir = rarb_data.parent
    test_pairs = dict(quora_pairs(data_dir, "test"))
    groups = quora_held_out_groups(data_dir, 40, seed=3)
    assert len(groups) == 40 and len({g.query for g in groups}) == 40
    for g in groups:
        assert len(g.candidates) == 4 and g.candidates[g.label] == test_pairs[g.query]
        assert len(set(g.candidates)) == 4 and g.query not in g.candidates
    assert {g.label for g in groups} == {0, 1, 2, 3}  # the duplicate is not always in one place
    assert quora_held_out_groups(data_dir, 40, seed=3) == groups  # seeded
