"""The paraphrase walk-through `facet up --demo` runs: the SDK against a running Paraphrase service."""

from __future__ import annotations

import sdk

SENTENCE = "How do I improve my English speaking skills?"
STREAMED = "What is the best way to learn Python?"


def run_demo(client: sdk.Client) -> None:
    """Paraphrase one question with each strategy, order by similarity, and stream a paraphrase
    token by token."""
    default = next(p for p in client.list_paraphrasers() if p.default)
    print(f"paraphraser: {default.name} v{default.version} ({default.setting}, up to {default.max_length} tokens)")
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in sorted(default.metrics.items()) if isinstance(v, (int, float)))
    if metrics:
        print(f"test-split metrics: {metrics}")
    print(f"\nsource: {SENTENCE!r}")
    for strategy, options in (("greedy", {}), ("beam", {"n": 3}), ("diverse_beam", {"n": 3}), ("sample", {"n": 3, "top_p": 0.9, "seed": 0})):
        out = client.paraphrase(SENTENCE, strategy=strategy, **options)
        print(f"\n{strategy} ({out.considered} candidates, {out.dropped_same_as_source} same as the source, "
              f"{out.dropped_too_similar} too similar to a kept one): logprob, similarity, BLEU to the source")
        for p in out:
            print(f"  {p.logprob:7.2f} {p.similarity:5.2f} {p.source_bleu:5.1f}  {p.text}")
    closest = client.paraphrase(SENTENCE, n=3, strategy="diverse_beam", order_by="similarity")
    print("\nordered by similarity:", [p.text for p in closest])
    print(f"\nstreamed: {STREAMED!r} ->", end=" ", flush=True)
    for token in client.paraphrase_stream(STREAMED):
        print(token.text, end="", flush=True)
    print()


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: one greedy paraphrase (both models run on the backend).

    Args:
        client: a client whose `paraphrase` address is the service to check.
    Returns:
        One line for the report, e.g. "paraphrase: 1 paraphrase by ddl-vsar-quora".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
    """
    out = client.paraphrase("facet check: is the paraphrase service up?", strategy="greedy")
    return f"paraphrase: {len(out)} paraphrase by {out.model}"
