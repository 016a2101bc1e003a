"""The reranking walk-through `facet up --demo` runs: the SDK against a running Rerank service."""

from __future__ import annotations

import sdk

QUERY = "Where is the Eiffel Tower?"
# In the order a first-stage retriever might return them: the answer is not first.
DOCUMENTS = [
    "The Statue of Liberty stands on Liberty Island in New York Harbor.",
    "Bananas are yellow when they are ripe.",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "Paris is the capital and largest city of France.",
    "Towers of Hanoi is a mathematical puzzle with three rods and a number of disks.",
]
# A long document whose relevant sentence comes after many unrelated ones: scored by its best window.
LONG_DOCUMENT = " ".join(["The weather report for the coming week promises rain and wind."] * 40) + (
    " The Eiffel Tower stands in Paris, on the left bank of the Seine."
)


def run_demo(client: sdk.Client) -> None:
    """Rerank a few documents and print them before and after; then a long document (windowed,
    and truncated) and a threshold on the calibrated probability."""
    default = next(r for r in client.list_rerankers() if r.default)
    print(f"reranker: {default.name} v{default.version} ({default.max_seq_length} tokens per pair, temperature {default.temperature:.3g})")
    print(f"\nquery: {QUERY!r}\nbefore:")
    for i, document in enumerate(DOCUMENTS):
        print(f"  [{i}] {document}")
    ranked = client.rerank(QUERY, DOCUMENTS, return_documents=True)
    print("after (probability, logit):")
    logits = {r.index: r.score for r in client.rerank(QUERY, DOCUMENTS, raw_scores=True)}
    for r in ranked:
        print(f"  [{r.index}] {r.probability:6.3f} {logits[r.index]:7.2f}  {r.document}")
    for truncate in (False, True):
        [long] = client.rerank(QUERY, [LONG_DOCUMENT], truncate=truncate)
        how = "truncated to its first window" if long.truncated else "scored by its best window" if long.windowed else "one window"
        print(f"\na {len(LONG_DOCUMENT)}-character document, answer at the end, truncate={truncate}: {how}, probability {long.probability:.3f}")
    confident = client.rerank(QUERY, DOCUMENTS, min_probability=0.5)
    shown = [r.index for r in confident] if not confident.none_relevant else "none relevant"
    print(f"\nmin_probability=0.5: {shown}")


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: rerank two short documents (the model runs on its backend).

    Args:
        client: a client whose `rerank` address is the service to check.
    Returns:
        One line for the report, e.g. "rerank: 2 documents by minilm-l6-rerank, best [0]".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
    """
    ranked = client.rerank("facet check", ["facet check", "bananas"])
    return f"rerank: {len(ranked)} documents by {ranked.model}, best [{ranked[0].index}]"
