"""The retrieval walk-through `facet up --demo` runs: the SDK against a running Retrieval service."""

from __future__ import annotations

import sdk

SENTENCES = {
    "paris": ("Paris is the capital and largest city of France.", {"lang": "en", "topic": "geography"}),
    "berlin": ("Berlin ist die Hauptstadt der Bundesrepublik Deutschland.", {"lang": "de", "topic": "geography"}),
    "photosynthesis": ("Plants turn sunlight, water and carbon dioxide into sugar and oxygen.", {"lang": "en", "topic": "biology"}),
    "mitochondria": ("Mitochondria produce most of the chemical energy a cell needs.", {"lang": "en", "topic": "biology"}),
    "everest": ("Mount Everest is the highest mountain above sea level.", {"lang": "en", "topic": "geography"}),
    "python": ("Python is a programming language that emphasises readability.", {"lang": "en", "topic": "computing"}),
}
QUERIES = [
    ("Which city is France's capital?", None),
    ("How do cells get their energy?", None),
    ("tallest peak in the world", {"topic": "geography"}),
]


def run_demo(client: sdk.Client) -> None:
    """Embed two sentences, fill a collection `demo`, search it with and without a filter, and
    once more with the reranker (`search(rerank=True)`; skipped with a hint when none is built)."""
    model = client.model_info()
    print(f"model: {model.name} v{model.version} ({model.properties.get('dimension')}-d) from {model.source}")
    vectors = client.embed(["a sentence", "another"])
    print(f"embed: {vectors.shape} {vectors.dtype}, norms {[round(float(n), 4) for n in (vectors**2).sum(1) ** 0.5]}")
    if any(c.name == "demo" for c in client.list_collections()):
        client.delete_collection("demo")
    client.create_collection("demo")
    ids = list(SENTENCES)
    result = client.upsert(
        "demo", ids=ids, texts=[SENTENCES[i][0] for i in ids], metadata=[SENTENCES[i][1] for i in ids]
    )
    print(f"upsert: {result.upserted} documents into collection 'demo'")
    for query, where in QUERIES:
        hits = client.search("demo", query, top_k=3, filter=where)
        suffix = f"  filter={where}" if where else ""
        print(f"\nsearch: {query!r}{suffix}")
        for hit in hits:
            print(f"  {hit.score:6.3f}  {hit.id:<15} {hit.text}")
    _search_then_rerank(client, "How do plants make sugar?")


def _search_then_rerank(client: sdk.Client, query: str) -> None:
    """The same search before and after reranking its candidates with the cross-encoder."""
    before = client.search("demo", query, top_k=3)
    try:
        after = client.search("demo", query, top_k=3, rerank=True, candidates=len(SENTENCES))
    except sdk.FailedPrecondition as exc:  # no reranker built: say how to get one
        print(f"\nsearch then rerank: skipped ({exc.message})")
        return
    print(f"\nsearch then rerank: {query!r} (the {len(SENTENCES)} nearest documents, reordered by the reranker)")
    print("  before (cosine)                  after (reranker probability)")
    for b, a in zip(before, after, strict=False):
        print(f"  {b.score:6.3f}  {b.id:<22}  {a.rerank_probability or 0.0:6.3f}  {a.id:<15} (was #{(a.retrieval_rank or 0) + 1})")


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: embed one short sentence (the model runs on its backend).

    Args:
        client: a client whose `retrieval` address is the service to check.
    Returns:
        One line for the report, e.g. "embed: 1 x 384 float32".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
    """
    vectors = client.embed(["facet check"])
    return f"embed: {vectors.shape[0]} x {vectors.shape[1]} {vectors.dtype}"
