"""The short demo `make run` ends with: the SDK against the running services."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

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
    if "nextframe" in services:
        run_nextframe_demo(client)
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


def run_nextframe_demo(client: sdk.Client, horizon: int = 20) -> None:
    models = client.list_frame_models()
    print("next-frame models (probe loss: random-init / pretrained; paper 1.28-6.24x):")
    for m in models:
        ratio = m.metrics.get("probe_ratio", float("nan"))
        print(f"  {m.id:<28} {m.constant} in [{m.constant_range[0]:g}, {m.constant_range[1]:g}] {m.units:<8} "
              f"next-frame loss {m.metrics['next_frame_loss']:.5f} (copy-last {m.metrics['copy_last_loss']:.5f})  probe ratio {ratio:.2f}x")  # fmt: skip
    out = Path(tempfile.gettempdir()) / "facet-demo"
    out.mkdir(exist_ok=True)
    print(f"\nrollouts of {horizon} frames from 5 simulated ones (MSE vs the simulation; GIFs in {out}):")
    for m in models:
        low, high = m.constant_range
        constant = low + 0.3 * (high - low)
        clip = client.simulate(m.dataset, constant=constant, frames=5 + horizon, seed=7)
        predicted = np.stack(list(client.rollout(m.id, clip[:5], horizon=horizon)))
        truth = clip[5:].astype(np.float32) / 255
        mse = float(((predicted.astype(np.float32) / 255 - truth) ** 2).mean())
        copy_last = float(((clip[4].astype(np.float32) / 255 - truth) ** 2).mean())
        estimate = client.estimate_constant(m.id, clip)
        gif = sdk.save_gif(np.concatenate([clip[:5], predicted]), out / f"{m.dataset}.gif")
        print(f"  {m.dataset:<18} rollout MSE {mse:.4f} (copy-last {copy_last:.4f})  {m.constant} {constant:.3g} -> estimate {estimate}  {gif.name}")
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
