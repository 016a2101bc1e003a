"""The SAE walk-through `facet up --demo` runs: the SDK against a running SAE service."""

from __future__ import annotations

import sdk

SAE_TEXT = "Albert Einstein was born in Ulm, in the German Empire, in 1879."


def run_demo(client: sdk.Client) -> None:
    """List the SAEs, encode a sentence, decompose one of its latents and compare two SAEs."""
    saes = client.list_saes()
    print("SAEs:")
    for s in saes:
        m = s.metrics
        ce = f"CE +{m['ce_increase']:.3f} nats" if "ce_increase" in m else "CE n/a"  # absent for an encoder LM
        print(f"  {s.id:<36} width {s.width:>5}  L0 {m['l0']:5.1f}  FVU {m['fvu']:.3f}  {ce}")
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


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: list the SAEs the service holds.

    Args:
        client: a client whose `sae` address is the service to check.
    Returns:
        One line for the report, e.g. "3 SAEs, largest smollm2-135m-l6-batchtopk-w256".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
        LookupError: the service holds no SAE (nothing to analyse with).
    """
    saes = client.list_saes()
    if not saes:
        raise LookupError("the service holds no SAE")
    return f"{len(saes)} SAEs, largest {max(saes, key=lambda s: s.width).id}"
