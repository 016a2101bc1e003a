"""The short demo `make run` ends with: the SDK against the running services."""

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


SAE_TEXT = "Albert Einstein was born in Ulm, in the German Empire, in 1879."


def run_demo(client: sdk.Client, services: list[str]) -> None:
    if "sae" in services:
        run_sae_demo(client)
    if "retrieval" in services:
        run_retrieval_demo(client)


def run_sae_demo(client: sdk.Client) -> None:
    saes = client.list_saes()
    print("SAEs:")
    for s in saes:
        m = s.metrics
        print(f"  {s.id:<36} width {s.width:>5}  L0 {m['l0']:5.1f}  FVU {m['fvu']:.3f}  CE +{m['ce_increase']:.3f} nats")
    largest = max(saes, key=lambda s: s.width if s.meta_width else 0)
    tokens = client.encode_text(largest.id, SAE_TEXT, top_k=3)
    print(f"\nencode_text({largest.id!r}, {SAE_TEXT!r}):")
    for token in tokens[:8]:
        print(f"  {token}")
    # the strongest latent on " Einstein" that the token before it does not also have
    einstein = next((i for i, t in enumerate(tokens) if "Einstein" in t.token), 2)
    latent = next((lat for lat in tokens[einstein].latents if lat not in tokens[einstein - 1].latents), tokens[einstein].latents[0])
    print(f"\ndecompose_latent({largest.id!r}, {latent}):")
    print(client.decompose_latent(largest.id, latent, top_n=3, members=5, contexts=2))
    smaller = [s for s in saes if s.family == largest.family and s.width < largest.width]
    if smaller:
        print(f"\ncompare_saes({smaller[0].id!r}, {largest.id!r}):")
        print(client.compare_saes(smaller[0].id, largest.id))
    print()


def run_retrieval_demo(client: sdk.Client) -> None:
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
