"""The cross-encoder's training data, all offline from the shared benchmark data (`../shared/data`).

Every example is a listwise *group*: one query, its candidates and the index of the relevant one;
the loss is cross-entropy over the group's logits (`training.rerank.train.listwise_loss`).

General relevance (what a search user asks a reranker for: is this text about what I asked?):

- Quora duplicate questions (`paraphrase/quora_50k/train_*.txt`, line i of source and target are
  duplicates): the source is the query, the target its positive.
- MRPC positives (`paraphrase/mrpc/msr_paraphrase_train.txt`, Quality == 1): sentence 1 is the
  query, sentence 2 its positive.
- Hard negatives: the pool is every positive of the pairs taken; each query's `negatives` nearest
  pool texts by the bi-encoder (the packaged all-MiniLM-L6-v2 in-process, cosine of normalised
  embeddings) that are neither the query nor any text known to be its duplicate (the connected
  component of the query in the whole Quora train file's duplicate graph, since Quora questions
  recur across pairs; MRPC pairs have one positive each). Mined negatives are what make a
  reranker better than its retriever (Qu et al. 2021, "RocketQA", §4.2; Karpukhin et al. 2020,
  "DPR", §3.2 on BM25 hard negatives); random ones are too easy.

Reasoning (the RAR-b paper's point, Xiao et al. 2024, §6: fine-tuning a reranker on reasoning
data helps most): the rows of the six RAR-b MCR files in the split asked for
(`training.retrieval.rarb.rows_of_split`; train for training, dev for calibration and early checks,
test never in training). A row's candidates are its group; rows with more than `max_candidates`
candidates (TempReason has up to 249) keep the gold and a seeded random sample of the others.

Instruction: RAR-b evaluates a query with and without its task instruction
(`instruction + " " + query`), so each RAR-b group takes the instruction with probability
`instruction_share` (0.5 by default, seeded per group): one model serves both settings.
"""

from __future__ import annotations

import csv
import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from training.retrieval.rarb import McrRow, load_rows, rows_of_split

QUORA = Path("paraphrase") / "quora_50k"
MRPC = Path("paraphrase") / "mrpc"
RARB = Path("rarb-mcr")


@dataclasses.dataclass(frozen=True)
class Group:
    """One listwise example: a query, its candidates (>= 2) and the relevant candidate's index."""

    query: str
    candidates: tuple[str, ...]
    label: int
    source: str  # "quora", "mrpc" or the RAR-b file name

    def __post_init__(self) -> None:
        if len(self.candidates) < 2 or not 0 <= self.label < len(self.candidates):
            raise ValueError(
                f"a group needs >= 2 candidates and a label among them ({self.source}: {self.query[:60]!r})"
            )

    def pairs(self) -> list[tuple[str, str]]:
        """(query, candidate) for each candidate, in order."""
        return [(self.query, c) for c in self.candidates]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def quora_pairs(data_dir: Path, split: str = "train") -> list[tuple[str, str]]:
    """Quora duplicate pairs (source, target) of `split` ("train": 50,000, "test": 4,000), in file order.

    Raises:
        FileNotFoundError: the files are missing.
    """
    folder = Path(data_dir) / QUORA
    return list(zip(_lines(folder / f"{split}_source.txt"), _lines(folder / f"{split}_target.txt"), strict=True))


def quora_held_out_groups(data_dir: Path, count: int, candidates: int = 4, seed: int = 0) -> list[Group]:
    """`count` groups from Quora's test split (the training takes train pairs only; some question
    texts recur across Quora's splits): a question, its duplicate and
    `candidates` - 1 other test-split questions drawn at random (not the question or its duplicate).
    The general half of the calibration pairs (`training.rerank.build`).

    Raises:
        FileNotFoundError: the files are missing.
        ValueError: count < 0 or candidates < 2.
    """
    if count < 0 or candidates < 2:
        raise ValueError(f"count must be >= 0 and candidates >= 2, got {count} and {candidates}")
    pairs = quora_pairs(data_dir, "test")
    rng = random.Random(seed)
    groups = []
    for query, duplicate in rng.sample(pairs, min(count, len(pairs))):
        others: list[str] = []
        while len(others) < candidates - 1:
            other = rng.choice(pairs)[1]
            if _norm(other) not in {_norm(query), _norm(duplicate)} and other not in others:
                others.append(other)
        slot = rng.randrange(candidates)
        texts = others[:slot] + [duplicate] + others[slot:]
        groups.append(Group(query, tuple(texts), slot, "quora-test"))
    return groups


def mrpc_positives(data_dir: Path, split: str = "train") -> list[tuple[str, str]]:
    """MRPC paraphrase pairs (Quality == 1) of `split` ("train": 2,753, "test": 1,147): (sentence 1, sentence 2)."""
    path = Path(data_dir) / MRPC / f"msr_paraphrase_{split}.txt"
    pairs = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) == 5 and row[0] == "1":
                pairs.append((row[3], row[4]))
    return pairs


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def duplicate_components(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Union-find over duplicate pairs: normalised text -> component id (texts in one component are duplicates)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(_norm(a)), find(_norm(b))
        if ra != rb:
            parent[ra] = rb
    roots: dict[str, int] = {}
    return {text: roots.setdefault(find(text), len(roots)) for text in list(parent)}


def mine_hard_negatives(pairs: Sequence[tuple[str, str]], negatives: int, components: dict[str, int], *, progress: bool = True,
                        batch_size: int = 128) -> list[list[str]]:  # fmt: skip
    """Each query's `negatives` nearest pool texts by the bi-encoder, duplicates excluded.

    Args:
        pairs: (query, positive); the pool is the distinct positives.
        negatives: hard negatives per query.
        components: `duplicate_components` of every known duplicate pair; texts sharing the
            query's component (or equal to it, case and spacing aside) are never its negatives.
        progress: a progress bar while embedding.
        batch_size: texts per encode batch.
    Returns:
        `negatives` texts per pair, nearest first.
    """
    from sentence_transformers import SentenceTransformer

    from training.rerank.model import base_model_dir, quiet_transformers

    pool = list(dict.fromkeys(p for _, p in pairs))
    queries = [q for q, _ in pairs]
    with quiet_transformers():
        encoder = SentenceTransformer(str(base_model_dir()), device="cpu", local_files_only=True)
    embed = lambda texts: encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,  # noqa: E731
                                         show_progress_bar=progress)  # fmt: skip
    pool_vectors, query_vectors = embed(pool), embed(queries)
    scores = query_vectors @ pool_vectors.T  # cosine, [queries, pool]
    take = min(len(pool), negatives + 16)  # room for the excluded duplicates
    nearest = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    mined = []
    for i, (query, positive) in enumerate(pairs):
        component = components.get(_norm(query), -1 - i)
        order = nearest[i][np.argsort(-scores[i, nearest[i]])]
        chosen = []
        for j in order:
            text = pool[j]
            key = _norm(text)
            if key in (_norm(query), _norm(positive)) or components.get(key) == component:
                continue
            chosen.append(text)
            if len(chosen) == negatives:
                break
        mined.append(chosen)
    return mined


def general_groups(data_dir: Path, *, quora: int, mrpc: int, negatives: int = 3, random_negatives: int = 1, seed: int = 0,
                   progress: bool = True) -> list[Group]:  # fmt: skip
    """Quora duplicate and MRPC paraphrase groups: the positive, `negatives` mined hard negatives and
    `random_negatives` pool texts drawn at random (not duplicates of the query either). The random
    ones keep the easy distinction (on topic or not) in every group, which is most of what a
    reranker of a retriever's top 100 is asked; the mined ones teach the fine one.

    Args:
        data_dir: the shared benchmark data (`../shared/data`).
        quora: Quora train pairs to take (a seeded sample of the 50,000; 0: none).
        mrpc: MRPC positive train pairs to take (a seeded sample of the 2,753; 0: none).
        negatives: mined negatives per group.
        random_negatives: random pool texts per group.
        seed: the sample and the positive's place in the group.
        progress: a progress bar while mining.
    Returns:
        the groups, Quora's first; the positive sits at a seeded random index.
    """
    rng = random.Random(seed)
    all_quora = quora_pairs(data_dir, "train") if quora else []
    all_mrpc = mrpc_positives(data_dir, "train") if mrpc else []
    taken = [("quora", p) for p in rng.sample(all_quora, min(quora, len(all_quora)))]
    taken += [("mrpc", p) for p in rng.sample(all_mrpc, min(mrpc, len(all_mrpc)))]
    if not taken:
        return []
    components = duplicate_components([*all_quora, *all_mrpc])
    mined = mine_hard_negatives([p for _, p in taken], negatives, components, progress=progress)
    pool = list(dict.fromkeys(p for _, (_, p) in taken))
    groups = []
    for (source, (query, positive)), negs in zip(taken, mined, strict=True):
        excluded = {_norm(query), _norm(positive), *(_norm(n) for n in negs)}
        component = components.get(_norm(query))
        extra: list[str] = []
        for _ in range(20 * random_negatives):
            if len(extra) == random_negatives:
                break
            text = pool[rng.randrange(len(pool))]
            if _norm(text) not in excluded and components.get(_norm(text)) != component:
                extra.append(text)
                excluded.add(_norm(text))
        candidates = [*negs, *extra]
        if not candidates:
            continue
        label = rng.randrange(len(candidates) + 1)
        candidates.insert(label, positive)
        groups.append(Group(query, tuple(candidates), label, source))
    return groups


def rarb_files(data_dir: Path) -> list[Path]:
    """The six RAR-b MCR CSVs under `data_dir/rarb-mcr`, sorted by name.

    Raises:
        FileNotFoundError: there are none.
    """
    files = sorted((Path(data_dir) / RARB).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no RAR-b MCR files under {Path(data_dir) / RARB}")
    return files


def row_group(row: McrRow, source: str, *, with_instruction: bool, max_candidates: int, rng: random.Random) -> Group:
    """An MCR row as a group: the gold and at most `max_candidates` - 1 others (a seeded sample, order
    kept; copies of the gold's text left out).

    Raises:
        ValueError: the row has no candidate other than copies of its gold.
    """
    gold = row.candidates[row.label]
    # a repeated gold text among the others would be a positive labelled negative (TempReason repeats candidates)
    keep = [i for i, text in enumerate(row.candidates) if i == row.label or text != gold]
    if len(keep) > max_candidates:
        others = rng.sample([i for i in keep if i != row.label], max_candidates - 1)
        keep = sorted([row.label, *others])
    candidates = tuple(row.candidates[i] for i in keep)
    return Group(row.query_text(with_instruction), candidates, keep.index(row.label), source)


def rarb_groups(data_dir: Path, split: str, *, max_candidates: int = 4, instruction_share: float = 0.5, per_file: int = 0,
                seed: int = 0) -> dict[str, list[Group]]:  # fmt: skip
    """The RAR-b MCR rows of `split` as groups, per file.

    Args:
        data_dir: the shared benchmark data (`../shared/data`).
        split: "train" or "dev" (`training.retrieval.rarb.split_of`; never pass "test" for training).
        max_candidates: candidates per group at most (the gold always among them).
        instruction_share: the probability that a group's query carries its instruction.
        per_file: at most this many rows per file (a seeded sample; 0: all).
        seed: seeds the candidate and row samples and the instruction draw.
    Returns:
        file name -> its groups. Rows with a single distinct candidate are dropped.
    """
    rng = random.Random(seed)
    out: dict[str, list[Group]] = {}
    for path in rarb_files(data_dir):
        rows = rows_of_split(load_rows(path), split)
        if 0 < per_file < len(rows):
            rows = rng.sample(rows, per_file)
        groups = []
        for row in rows:
            with_instruction = rng.random() < instruction_share
            if len(set(row.candidates)) < 2:
                continue
            groups.append(
                row_group(row, path.name, with_instruction=with_instruction, max_candidates=max_candidates, rng=rng)
            )
        out[path.name] = groups
    return out


def describe(sources: Mapping[str, Sequence[Group]], split: str) -> list[dict[str, object]]:
    """`Prop.TRAINING_DATA` rows: {"name", "groups", "pairs", "split"} per source."""
    return [{"name": name, "groups": len(groups), "pairs": sum(len(g.candidates) for g in groups), "split": split}
            for name, groups in sources.items() if groups]  # fmt: skip
