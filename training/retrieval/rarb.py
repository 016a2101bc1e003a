"""RAR-b multiple-choice retrieval (MCR) evaluation through the retrieval service and the SDK.

    facet eval rarb-mcr --data ../shared/data/rarb-mcr [--address HOST:PORT] [--limit N]
                        [--seed S] [--full] [--json results.json] [--model NAME]
                        [--split train|dev|test] [--reranker NAME ...] [--rerank-address HOST:PORT]

MCR protocol (RAR-b): every candidate of a row is scored against the row's query by cosine
(normalised embeddings, dot product) and the argmax is the prediction; the metric is accuracy.
The query is `instruction + " " + query` (with instruction) or the query alone (without);
candidates never get the instruction. Every text is embedded by the service's Embed RPC, each
distinct text once, in batches of at most 256.

TempReason files put the correct candidate at index 0 and some rows repeat a candidate, so an
argmax that breaks ties toward the first index gets free accuracy: their candidates are
shuffled per row under a fixed seed (`numpy.random.default_rng(seed)`) and the number of tied
rows is reported.

The "full" setting (`--full`): per file, every distinct candidate of the file goes into a
temporary collection; each query searches it (top 10) and the labelled candidate is the one
relevant document: nDCG@10 and Recall@10.

Rerankers (`--reranker NAME`, repeatable): MCR is also scored by each cross-encoder through the
rerank service (one Rerank call per row, `raw_scores`: the argmax of the logits, the first index
winning a tie as above); with `--full`, each query also searches with `rerank=True` (the
bi-encoder's top `RERANK_CANDIDATES` = 100, reordered by the reranker in the retrieval service):
nDCG@10 and Recall@10 before and after reranking. `--split` keeps one part of the question-level
split (`split_of`): rerankers are trained on `train`, calibrated on `dev`, compared on `test`.

The bi-encoder is the retrieval service's embedding model (`retrieval.embedding_model`; Embed and
Search take no model name). `--model NAME` names the one to score: the evaluation stops before any
work when the service at `--address` serves another (start one with
`FACET_RETRIEVAL_EMBEDDING_MODEL=NAME`), so a table is never labelled with the wrong model. The
data folder's reference figures are all-MiniLM-L6-v2's: shown beside the default model only.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

import sdk
from training.retrieval.export import DEFAULT_EMBEDDING_MODEL, RARB_MCR

T = TypeVar("T")
R = TypeVar("R")

DISPLAY_NAMES: dict[str, str] = {
    "alphanli-test.csv": "αNLI",
    "physicaliqa-test.csv": "PIQA",
    "winogrande-test.csv": "WinoGrande",
    "spartqa-test.csv": "SpartQA",
    "tempreason-l2-pure-test.csv": "TempReason-l2",
    "tempreason-l3-pure-test.csv": "TempReason-l3",
}
# The RAR-b MCR CSVs in the shared benchmark data beside the checkout (../shared/data/rarb-mcr).
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / RARB_MCR
SHUFFLED_FILE_PREFIX = "tempreason"  # gold always at index 0: shuffle candidates
EMBED_BATCH_TEXTS = 256  # the service's default max_texts_per_request
EMBED_REQUESTS_IN_FLIGHT = 2  # one tokenizing while the other runs the model
# 256 texts of 256 tokens take tens of seconds on a small CPU, more with a request queued ahead.
EMBED_TIMEOUT_S = 600.0
UPSERT_BATCH_DOCS = 1024  # the service's default max_documents_per_request
SEARCH_REQUESTS_IN_FLIGHT = 8
FULL_TOP_K = 10
# Two candidate scores closer than this count as a tie (identical texts give identical scores).
TIE_TOLERANCE = 1e-6
FULL_COLLECTION_PREFIX = "rarb-full-"
RERANK_CANDIDATES = 100  # the full setting's reranking: the bi-encoder's top 100 (RAR-b's "full" reranking setting)
RERANK_TIMEOUT_S = 600.0
_COLLECTION_NAME_MAX_CHARS = 128


# -- data --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class McrRow:
    """One multiple-choice row: the instruction, the query, the candidates and the gold's index."""

    instruction: str
    query: str
    candidates: tuple[str, ...]
    label: int

    @property
    def gold(self) -> str:
        """The correct candidate's text."""
        return self.candidates[self.label]

    def query_text(self, with_instruction: bool) -> str:
        """The text embedded for the query: `instruction + " " + query`, or the query alone."""
        return f"{self.instruction} {self.query}" if with_instruction else self.query


def load_rows(path: Path, limit: int = 0) -> list[McrRow]:
    """Read an RAR-b MCR CSV (instructions, queries, documents, labels); `limit` > 0 keeps the first rows.

    Raises:
        ValueError: a row whose documents are not a list of strings or whose label is out of range.
    """
    rows: list[McrRow] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"instructions", "queries", "documents", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for record in reader:
            if 0 < limit <= len(rows):
                break
            where = f"{path.name} line {reader.line_num}"
            try:
                candidates = ast.literal_eval(record["documents"])
                label = int(record["labels"])
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{where}: cannot parse documents or labels: {exc}") from None
            if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
                raise ValueError(f"{where}: documents must be a non-empty list of strings")
            if not 0 <= label < len(candidates):
                raise ValueError(f"{where}: label {label} is outside 0..{len(candidates) - 1}")
            rows.append(McrRow(record["instructions"], record["queries"], tuple(candidates), label))
    return rows


# The question-level split of RAR-b rows for training rerankers and bi-encoders (issue #14): a
# fixed hash of the query text puts each row in train, dev or test, so rows sharing a query never
# straddle the split and the split never changes with the order or number of rows read.
SPLITS = ("train", "dev", "test")
SPLIT_PERCENT = {"train": 60, "dev": 20, "test": 20}


def split_of(query: str) -> str:
    """The split ("train", "dev" or "test") of a row with this query (without its instruction):
    the first 8 bytes of SHA-256 of its UTF-8, as an integer, modulo 100 — below 60 train, below
    80 dev, else test (60/20/20)."""
    bucket = int.from_bytes(hashlib.sha256(query.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    return "dev" if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["dev"] else "test"


def rows_of_split(rows: Sequence[McrRow], split: str) -> list[McrRow]:
    """The rows of `rows` in `split` (see `split_of`), in their order.

    Raises:
        ValueError: `split` is not one of train, dev, test.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [row for row in rows if split_of(row.query) == split]


def needs_shuffle(path: Path) -> bool:
    """Whether a file's candidates must be shuffled before MCR scoring (TempReason: gold always first)."""
    return path.name.startswith(SHUFFLED_FILE_PREFIX)


def shuffle_candidates(rows: Sequence[McrRow], seed: int) -> list[McrRow]:
    """Each row's candidates in a random order from `numpy.random.default_rng(seed)`, the label remapped.

    The same seed and rows give the same order; the label keeps pointing at the same gold text.
    """
    rng = np.random.default_rng(seed)
    shuffled: list[McrRow] = []
    for row in rows:
        order = rng.permutation(len(row.candidates))  # new position i holds old candidate order[i]
        label = int(np.flatnonzero(order == row.label)[0])
        shuffled.append(dataclasses.replace(row, candidates=tuple(row.candidates[i] for i in order), label=label))
    return shuffled


# -- embeddings through the service ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EmbeddingTable:
    """Normalised embeddings of distinct texts: `vectors[index[text]]`."""

    index: dict[str, int]
    vectors: np.ndarray  # float32 [distinct texts, dimension]

    def of(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts` (each must have been embedded), float32 [len(texts), dimension]."""
        return self.vectors[[self.index[t] for t in texts]]


def _map_in_threads(
    call: Callable[[T], R], items: Sequence[T], workers: int, bar: tqdm, weight: Callable[[T], int]
) -> list[R]:
    """`[call(item) for item in items]` with `workers` calls in flight, advancing `bar` by `weight(item)`."""
    results: list[R] = []
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for item, result in zip(items, pool.map(call, items), strict=True):
            results.append(result)
            bar.update(weight(item))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, send no more calls
    return results


def embed_texts(
    client: sdk.Client, texts: Iterable[str], *, desc: str = "embed", progress: bool = True
) -> EmbeddingTable:
    """Embed each distinct text once through the service (normalised), `EMBED_BATCH_TEXTS` per call.

    Texts are sent sorted by length so a batch pads little.
    """
    distinct = sorted(dict.fromkeys(texts), key=len)
    batches = [distinct[i : i + EMBED_BATCH_TEXTS] for i in range(0, len(distinct), EMBED_BATCH_TEXTS)]
    with tqdm(total=len(distinct), desc=desc, unit="text", disable=not progress, leave=False) as bar:
        parts = _map_in_threads(
            lambda batch: client.embed(batch, normalize=True, timeout_s=EMBED_TIMEOUT_S),
            batches,
            EMBED_REQUESTS_IN_FLIGHT,
            bar,
            len,
        )
    vectors = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 0), np.float32)
    return EmbeddingTable({text: i for i, text in enumerate(distinct)}, vectors)


def texts_to_embed(rows: Iterable[McrRow]) -> list[str]:
    """Every text an evaluation of `rows` embeds: both query variants and every candidate, each once."""
    texts: dict[str, None] = {}
    for row in rows:
        texts[row.query_text(False)] = None
        texts[row.query_text(True)] = None
        texts.update(dict.fromkeys(row.candidates))
    return list(texts)


# -- MCR ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class McrScore:
    """Accuracy of one query variant over a file; `tied_rows`: rows whose top score is shared by >1 candidate."""

    accuracy: float
    correct: int
    rows: int
    tied_rows: int


@dataclasses.dataclass(frozen=True)
class McrResult:
    """MCR accuracy of one file without and with the instruction, by one scorer."""

    file: str
    rows: int
    shuffled: bool
    without_instruction: McrScore
    with_instruction: McrScore
    reference: tuple[float, float] | None  # (without, with) accuracy from sentence-transformers
    scorer: str = "bi-encoder"  # "bi-encoder" (cosine of the service's embeddings) or "reranker <name>"


def score_mcr(rows: Sequence[McrRow], table: EmbeddingTable, with_instruction: bool) -> McrScore:
    """Argmax of cosine over each row's candidates (the first index wins a tie), against the label."""
    correct = 0
    tied = 0
    for row in rows:
        query = table.of([row.query_text(with_instruction)])[0]
        scores = table.of(row.candidates) @ query
        best = int(np.argmax(scores))
        correct += best == row.label
        tied += int(np.count_nonzero(scores >= scores[best] - TIE_TOLERANCE)) > 1
    return McrScore(correct / len(rows) if rows else float("nan"), correct, len(rows), tied)


def score_mcr_reranked(
    client: sdk.Client, rows: Sequence[McrRow], reranker: str, with_instruction: bool, *, desc: str = "rerank", progress: bool = True
) -> McrScore:
    """Argmax of a reranker's logits over each row's candidates (the first index wins a tie), against
    the label: one Rerank call per row through the rerank service, `SEARCH_REQUESTS_IN_FLIGHT` at once.

    Args:
        client: a client whose `rerank` address is the rerank service.
        rows: the rows (TempReason's already shuffled).
        reranker: the reranker's name ("" = the service's default).
        with_instruction: the query variant.
    Returns:
        The accuracy, correct rows and rows whose top logit is shared (within `TIE_TOLERANCE`).
    Raises:
        sdk.FacetError: a Rerank call failed (e.g. NotFound for an unknown reranker).
    """

    def best(row: McrRow) -> tuple[int, bool]:
        # truncate: a query (a SpartQA story) too long for the reranker's window is cut to fit, as
        # sentence-transformers' CrossEncoder.predict truncates a pair
        result = client.rerank(row.query_text(with_instruction), list(row.candidates), raw_scores=True, truncate=True,
                               model=reranker or None, timeout_s=RERANK_TIMEOUT_S)  # fmt: skip
        logits = np.empty(len(row.candidates), dtype=np.float64)
        for ranked in result:
            logits[ranked.index] = ranked.score
        top = int(np.argmax(logits))
        return top, int(np.count_nonzero(logits >= logits[top] - TIE_TOLERANCE)) > 1

    with tqdm(total=len(rows), desc=desc, unit="row", disable=not progress, leave=False) as bar:
        picks = _map_in_threads(best, rows, SEARCH_REQUESTS_IN_FLIGHT, bar, lambda _: 1)
    correct = sum(top == row.label for (top, _), row in zip(picks, rows, strict=True))
    tied = sum(tie for _, tie in picks)
    return McrScore(correct / len(rows) if rows else float("nan"), correct, len(rows), tied)


_REFERENCE_SENTENCE = re.compile(r"Reference figures.*?without\s*/\s*with instruction:(?P<figures>[^.]*(?:\.\d[^.]*)*)\.", re.S)
_REFERENCE_FIGURE = re.compile(r"(?P<name>[^\s;:,]+)\s+(?P<without>\d\.\d+)\s*/\s*(?P<with>\d\.\d+)")


def reference_accuracy(data_dir: Path) -> dict[str, tuple[float, float]]:
    """The reference MCR accuracy per file, read from the data folder's README.

    The README records the figures measured with sentence-transformers and all-MiniLM-L6-v2
    (fp32, CPU) as "Reference figures ... without / with instruction: αNLI 0.4961 / 0.5026; ...";
    names are the display names of `DISPLAY_NAMES`.

    Args:
        data_dir: the RAR-b MCR folder (e.g. ../shared/data/rarb-mcr).
    Returns:
        {file name: (accuracy without instruction, with instruction)}; empty when the README
        has no such sentence.
    """
    readme = data_dir / "README.md"
    if not readme.is_file():
        return {}
    sentence = _REFERENCE_SENTENCE.search(readme.read_text(encoding="utf-8"))
    if sentence is None:
        return {}
    files = {display: file for file, display in DISPLAY_NAMES.items()}
    found: dict[str, tuple[float, float]] = {}
    for figure in _REFERENCE_FIGURE.finditer(sentence["figures"]):
        if figure["name"] in files:
            found[files[figure["name"]]] = (float(figure["without"]), float(figure["with"]))
    return found


def evaluate_mcr(path: Path, rows: Sequence[McrRow], table: EmbeddingTable, seed: int) -> McrResult:
    """MCR accuracy of one file's rows (TempReason candidates shuffled with `seed`), both query variants."""
    shuffled = needs_shuffle(path)
    scored = shuffle_candidates(rows, seed) if shuffled else list(rows)
    return McrResult(
        file=path.name,
        rows=len(scored),
        shuffled=shuffled,
        without_instruction=score_mcr(scored, table, with_instruction=False),
        with_instruction=score_mcr(scored, table, with_instruction=True),
        reference=reference_accuracy(path.parent).get(path.name),
    )


def evaluate_mcr_reranked(
    client: sdk.Client, path: Path, rows: Sequence[McrRow], reranker: str, seed: int, *, progress: bool = True
) -> McrResult:
    """MCR accuracy of one file's rows by a reranker (TempReason shuffled with `seed`, as for the
    bi-encoder: the same candidate orders), both query variants."""
    shuffled = needs_shuffle(path)
    scored = shuffle_candidates(rows, seed) if shuffled else list(rows)
    variants = {
        with_instruction: score_mcr_reranked(
            client, scored, reranker, with_instruction, desc=f"{path.stem}: {reranker} {'with' if with_instruction else 'w/o'}", progress=progress
        )
        for with_instruction in (False, True)
    }
    return McrResult(path.name, len(scored), shuffled, variants[False], variants[True], None, scorer=f"reranker {reranker}")


# -- full setting ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FullScore:
    """Retrieval of the gold among all of a file's candidates, for one query variant."""

    ndcg_at_10: float
    recall_at_10: float
    queries: int
    # reranked searches only: queries the reranker could not read (too long for its window beside
    # `rerank.min_window_tokens`; search has no truncate), counted in retrieval order
    unreranked: int = 0


@dataclasses.dataclass(frozen=True)
class FullResult:
    """The full setting of one file: corpus size and both query variants; `reranked`: the same
    searches with each reranker reordering the top `RERANK_CANDIDATES`, {name: (w/o, with)}."""

    file: str
    rows: int
    corpus_documents: int
    collection: str
    without_instruction: FullScore
    with_instruction: FullScore
    reranked: dict[str, tuple[FullScore, FullScore]] = dataclasses.field(default_factory=dict)


def _full_score(ranks: Sequence[int | None], unreranked: int = 0) -> FullScore:
    return FullScore(
        ndcg_at_10=float(np.mean([ndcg_at_k(r) for r in ranks])) if ranks else float("nan"),
        recall_at_10=float(np.mean([recall_at_k(r) for r in ranks])) if ranks else float("nan"),
        queries=len(ranks),
        unreranked=unreranked,
    )


def ndcg_at_k(rank: int | None, k: int = FULL_TOP_K) -> float:
    """nDCG@k with one relevant document at 1-based `rank` (None: not retrieved): 1/log2(rank+1) within k, else 0."""
    if rank is None or not 1 <= rank <= k:
        return 0.0
    return 1.0 / math.log2(rank + 1)


def recall_at_k(rank: int | None, k: int = FULL_TOP_K) -> float:
    """Recall@k with one relevant document at 1-based `rank` (None: not retrieved)."""
    return 1.0 if rank is not None and 1 <= rank <= k else 0.0


def full_collection_name(path: Path) -> str:
    """The temporary collection of a file's full setting: `rarb-full-<stem>`, only [A-Za-z0-9_-], at most 128 chars."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or "data"
    return (FULL_COLLECTION_PREFIX + stem)[:_COLLECTION_NAME_MAX_CHARS]


def _drop_collection(client: sdk.Client, name: str) -> None:
    try:
        client.delete_collection(name)
    except sdk.NotFound:
        pass


def evaluate_full(
    client: sdk.Client,
    path: Path,
    rows: Sequence[McrRow],
    table: EmbeddingTable,
    *,
    rerankers: Sequence[str] = (),
    progress: bool = True,
) -> FullResult:
    """The full setting of one file: every distinct candidate in a temporary collection, each query searches it.

    Documents and queries use the embeddings in `table` (made by the service's Embed); the collection
    is stored and searched by the service. With `rerankers`, each query also searches with
    `rerank=True` (the top `RERANK_CANDIDATES` reordered by that reranker in the retrieval service;
    the query is embedded by the service). The collection is deleted first (left over from an
    aborted run) and afterwards, also on failure.
    """
    corpus = list(dict.fromkeys(c for row in rows for c in row.candidates))
    doc_ids = {text: f"d{i}" for i, text in enumerate(corpus)}
    name = full_collection_name(path)
    _drop_collection(client, name)
    client.create_collection(name, metric="cosine")
    try:
        with tqdm(total=len(corpus), desc=f"{path.stem}: corpus", unit="doc", disable=not progress, leave=False) as bar:
            for start in range(0, len(corpus), UPSERT_BATCH_DOCS):
                chunk = corpus[start : start + UPSERT_BATCH_DOCS]
                client.upsert(name, ids=[doc_ids[t] for t in chunk], texts=chunk, vectors=table.of(chunk))
                bar.update(len(chunk))
        scores: dict[bool, FullScore] = {}
        reranked: dict[str, dict[bool, FullScore]] = {}
        for with_instruction in (False, True):
            variant = "with instruction" if with_instruction else "without instruction"
            queries = [(row.query_text(with_instruction), doc_ids[row.gold]) for row in rows]

            def gold_rank(query: tuple[str, str]) -> int | None:
                hits = client.search(name, table.of([query[0]])[0], top_k=FULL_TOP_K)
                return next((i + 1 for i, hit in enumerate(hits) if hit.id == query[1]), None)

            desc = f"{path.stem}: search {variant}"
            with tqdm(total=len(queries), desc=desc, unit="query", disable=not progress, leave=False) as bar:
                ranks = _map_in_threads(gold_rank, queries, SEARCH_REQUESTS_IN_FLIGHT, bar, lambda _: 1)
            scores[with_instruction] = _full_score(ranks)
            for reranker in rerankers:

                def reranked_rank(query: tuple[str, str], reranker: str = reranker) -> tuple[int | None, bool]:
                    try:
                        hits = client.search(
                            name, query[0], top_k=FULL_TOP_K, rerank=True, candidates=RERANK_CANDIDATES, reranker=reranker,
                            timeout_s=RERANK_TIMEOUT_S,
                        )  # fmt: skip
                    except sdk.InvalidArgument as exc:
                        if "cannot read this query" not in str(exc):
                            raise
                        return gold_rank(query), True  # a query over the reranker's window: the retrieval order
                    return next((i + 1 for i, hit in enumerate(hits) if hit.id == query[1]), None), False

                desc = f"{path.stem}: search + {reranker} {variant}"
                with tqdm(total=len(queries), desc=desc, unit="query", disable=not progress, leave=False) as bar:
                    outcomes = _map_in_threads(reranked_rank, queries, SEARCH_REQUESTS_IN_FLIGHT, bar, lambda _: 1)
                unread = sum(kept for _, kept in outcomes)
                reranked.setdefault(reranker, {})[with_instruction] = _full_score([r for r, _ in outcomes], unread)
    finally:
        _drop_collection(client, name)
    pairs = {r: (v[False], v[True]) for r, v in reranked.items()}
    return FullResult(path.name, len(rows), len(corpus), name, scores[False], scores[True], pairs)


# -- one file, many files ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileResult:
    """Everything measured on one file: the bi-encoder's MCR, each reranker's, the full setting."""

    mcr: McrResult
    full: FullResult | None
    elapsed_s: float
    reranked: tuple[McrResult, ...] = ()


def evaluate_file(
    client: sdk.Client,
    path: Path,
    *,
    limit: int = 0,
    seed: int = 0,
    full: bool = False,
    progress: bool = True,
    split: str | None = None,
    rerankers: Sequence[str] = (),
) -> FileResult:
    """MCR (and with `full` the full setting) of one RAR-b MCR file through the services.

    Args:
        client: its `retrieval` address serves the bi-encoder (and the reranked searches); its
            `rerank` address the rerankers.
        path: an RAR-b MCR CSV.
        limit: > 0 keeps the first rows (of the split).
        seed: of the TempReason candidate shuffle.
        full: also the full setting.
        split: keep only the rows of this part of `split_of` ("train", "dev", "test"); None: all.
        rerankers: also score MCR (and the full setting) with these rerankers.
    """
    started = time.perf_counter()
    rows = load_rows(path)
    if split is not None:
        rows = rows_of_split(rows, split)
    if limit > 0:
        rows = rows[:limit]
    table = embed_texts(client, texts_to_embed(rows), desc=f"{path.stem}: embed", progress=progress)
    mcr = evaluate_mcr(path, rows, table, seed)
    reranked = tuple(evaluate_mcr_reranked(client, path, rows, r, seed, progress=progress) for r in rerankers)
    full_result = evaluate_full(client, path, rows, table, rerankers=rerankers, progress=progress) if full else None
    return FileResult(mcr, full_result, time.perf_counter() - started, reranked)


def data_files(data_dir: Path) -> list[Path]:
    """The MCR CSV files of a data folder: the known ones in a fixed order, then any others by name."""
    found = {p.name: p for p in data_dir.glob("*.csv")}
    known = [found.pop(name) for name in DISPLAY_NAMES if name in found]
    return known + [found[name] for name in sorted(found)]


# -- report ------------------------------------------------------------------------------------


def _display(file: str) -> str:
    return DISPLAY_NAMES.get(file, Path(file).stem)


def _accuracy_cell(score: McrScore, reference: float | None) -> str:
    if reference is None:
        return f"{score.accuracy:.4f}"
    return f"{score.accuracy:.4f} (ref {reference:.4f}, Δ {abs(score.accuracy - reference):.4f})"


def _table(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), rule, *(fmt.format(*line) for line in lines)])


def format_mcr_table(results: Sequence[McrResult]) -> str:
    """Accuracy without / with instruction per file (and scorer, when there are several), the
    reference and |difference| where known, ties."""
    several = len({r.scorer for r in results}) > 1
    lines = []
    for r in results:
        ref_without, ref_with = r.reference if r.reference else (None, None)
        ties = f"{r.without_instruction.tied_rows} / {r.with_instruction.tied_rows}"
        lines.append(
            [
                _display(r.file) + (" (shuffled)" if r.shuffled else ""),
                *([r.scorer] if several else []),
                f"{r.rows:,}",
                _accuracy_cell(r.without_instruction, ref_without),
                _accuracy_cell(r.with_instruction, ref_with),
                ties,
            ]
        )
    header = ["file", *(["scorer"] if several else []), "rows", "acc w/o instruction", "acc with instruction", "tied rows w/o / with"]
    return _table(header, lines)


def format_full_table(results: Sequence[FullResult]) -> str:
    """nDCG@10 and Recall@10 per file, without and with instruction: the bi-encoder's search, then
    each reranker's reordering of its top `RERANK_CANDIDATES` ("+ rerank NAME")."""
    lines = []
    for r in results:
        scored = [("bi-encoder", r.without_instruction, r.with_instruction)]
        scored += [(f"+ rerank {name}", without, with_) for name, (without, with_) in r.reranked.items()]
        for label, without, with_ in scored:
            lines.append(
                [
                    _display(r.file),
                    label,
                    f"{r.rows:,}",
                    f"{r.corpus_documents:,}",
                    f"{without.ndcg_at_10:.4f}",
                    f"{without.recall_at_10:.4f}",
                    f"{with_.ndcg_at_10:.4f}",
                    f"{with_.recall_at_10:.4f}",
                ]
            )
    header = ["file", "ranking", "queries", "corpus", "nDCG@10 w/o", "R@10 w/o", "nDCG@10 with", "R@10 with"]
    return _table(header, lines)


def results_json(
    results: Sequence[FileResult],
    *,
    model: sdk.ModelInfo,
    address: str,
    seed: int,
    limit: int,
    split: str | None = None,
    rerankers: Sequence[str] = (),
) -> dict[str, Any]:
    """The results as plain JSON-ready data."""
    return {
        "benchmark": "rarb-mcr",
        "address": address,
        "model": {"name": model.name, "version": model.version},
        "seed": seed,
        "limit": limit,
        "split": split,
        "rerankers": list(rerankers),
        "rerank_candidates": RERANK_CANDIDATES,
        "tie_tolerance": TIE_TOLERANCE,
        "files": [dataclasses.asdict(r) for r in results],
    }


# -- command -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The options of `facet eval rarb-mcr`."""
    parser = argparse.ArgumentParser(prog="facet eval rarb-mcr", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the RAR-b mcr/ CSVs (default: %(default)s)")
    parser.add_argument("--address", help="retrieval service host:port (default: FACET_RETRIEVAL_ADDR or localhost)")
    parser.add_argument("--limit", type=int, default=0, help="rows per file (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TempReason candidate shuffle")
    parser.add_argument("--full", action="store_true", help="also the 'full' setting (nDCG@10, Recall@10)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--split", choices=SPLITS, help="only this part of the question-level split (rerankers train on train, compare on test)")
    parser.add_argument(
        "--reranker", action="append", default=[], metavar="NAME",
        help="also score with this reranker through the rerank service (repeatable; with --full, also rerank the searches)",
    )  # fmt: skip
    parser.add_argument("--rerank-address", help="rerank service host:port (default: FACET_RERANK_ADDR or localhost)")
    parser.add_argument(
        "--model", metavar="NAME",
        help="the embedding model to score with; the retrieval service at --address must serve it "
        "(FACET_RETRIEVAL_EMBEDDING_MODEL=NAME; default: whichever it serves)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """`facet eval rarb-mcr [--data DIR] [--address HOST:PORT] [--limit N] [--seed S] [--full] [--json PATH] [--model NAME]`.

    Returns:
        0 when evaluated; 1 when the service is unreachable or fails, or serves another embedding
        model than --model; 2 for a missing or empty data folder, a negative --limit or malformed
        rows (the reason on stderr).
    """
    args = build_parser().parse_args(argv)
    data_dir: Path = args.data
    if not data_dir.is_dir():
        print(
            f"facet eval rarb-mcr: data folder {data_dir} does not exist; pass --data DIR (the RAR-b mcr/ CSVs)",
            file=sys.stderr,
        )
        return 2
    files = data_files(data_dir)
    if not files:
        print(f"facet eval rarb-mcr: no .csv files in {data_dir}", file=sys.stderr)
        return 2
    if args.limit < 0:
        print("facet eval rarb-mcr: --limit must be >= 0 (0: all rows)", file=sys.stderr)
        return 2
    client = sdk.Client(retrieval=args.address, rerank=args.rerank_address)
    address = client.address("retrieval")
    started = time.perf_counter()
    results: list[FileResult] = []
    try:
        model = client.model_info()
        if args.model is not None and model.name != args.model:
            print(
                f"facet eval rarb-mcr: the retrieval service at {address} serves the embedding model {model.name} "
                f"v{model.version}, not {args.model}; serve it with FACET_RETRIEVAL_EMBEDDING_MODEL={args.model} "
                "(e.g. `python -m services.retrieval --port N`) and pass --address",
                file=sys.stderr,
            )
            return 1
        split = f", {args.split} split" if args.split else ""
        print(f"RAR-b MCR through {address}: model {model.name} v{model.version}, seed {args.seed}{split}", flush=True)
        for reranker in args.reranker:
            info = client.get_reranker(reranker)
            print(f"  reranker {info.name} v{info.version} through {client.address('rerank')}", flush=True)
        for path in tqdm(files, desc="files", unit="file"):
            result = evaluate_file(
                client, path, limit=args.limit, seed=args.seed, full=args.full, split=args.split, rerankers=args.reranker
            )
            if model.name != DEFAULT_EMBEDDING_MODEL:  # the reference figures are the default model's
                result = dataclasses.replace(result, mcr=dataclasses.replace(result.mcr, reference=None))
            tqdm.write(f"  {_display(path.name)}: {result.mcr.rows:,} rows in {result.elapsed_s:.1f} s")
            results.append(result)
    except sdk.Unavailable as exc:
        print(
            f"facet eval rarb-mcr: a service is unreachable ({exc.message}); retrieval at {address}"
            + (f", rerank at {client.address('rerank')}" if args.reranker else "")
            + ": start them with `facet up`, or pass --address / --rerank-address (FACET_RETRIEVAL_ADDR, FACET_RERANK_ADDR)",
            file=sys.stderr,
        )
        return 1
    except sdk.NotFound as exc:
        print(f"facet eval rarb-mcr: {exc.message}", file=sys.stderr)
        return 1
    except sdk.FacetError as exc:
        print(f"facet eval rarb-mcr: the retrieval service at {address} failed: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"facet eval rarb-mcr: bad data: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    elapsed_s = time.perf_counter() - started

    print()
    print("MCR accuracy (argmax of cosine or reranker logits; TempReason candidates shuffled, ties = rows whose top score is shared)")
    print(format_mcr_table([m for r in results for m in (r.mcr, *r.reranked)]))
    full_results = [r.full for r in results if r.full is not None]
    if full_results:
        print()
        print(
            f"Full setting (all distinct candidates of a file as the corpus, top {FULL_TOP_K}; "
            f"+ rerank: the bi-encoder's top {RERANK_CANDIDATES} reordered)"
        )
        print(format_full_table(full_results))
    print(f"\n{sum(r.mcr.rows for r in results):,} rows in {elapsed_s:.1f} s")
    if args.json is not None:
        payload = results_json(
            results, model=model, address=address, seed=args.seed, limit=args.limit, split=args.split, rerankers=args.reranker
        )
        payload["elapsed_s"] = elapsed_s
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
