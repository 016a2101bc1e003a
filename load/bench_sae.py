"""SAE service latency: EncodeText (128 tokens) and DecomposeLatent p50/p99 over gRPC, side by
side with what a user would otherwise run in their own process on the same CPU.

    python load/bench_sae.py [--repository DIR] [--sae ID] [--calls 200] [--quick] [--json PATH]

- EncodeText through Facet (tokenise, LM prefix to the SAE's layer in ONNX Runtime, SAE encoder,
  top latents per token, over gRPC) vs in-process PyTorch as SAELens users run it: the LM
  truncated at the layer (`stop_at_layer`), the SAE from its SAELens-format weights, top-k.
- DecomposeLatent through Facet (meta-SAE encoder, members, explanations, over gRPC) vs the same
  meta encoder ONNX session and stored arrays used in-process (no RPC): the cost of the service.

Calls alternate between the two sides so machine noise hits both; the SAEs come from the model
repository (`facet models build`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load.harness import BenchmarkService, percentile, table_text, timed_ms  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402

TEXT_TOKENS = 128


def held_out_text(tokenizer: object, tokens: int) -> str:
    """`tokens` tokens of a Wikipedia paragraph the SAEs were not trained on (the corpus's last)."""
    from training.sae.corpus import wikipedia_paragraphs

    paragraphs = list(wikipedia_paragraphs())[-20:]
    ids = [i for p in paragraphs for i in tokenizer(p, add_special_tokens=False)["input_ids"]]  # type: ignore[operator]
    return str(tokenizer.decode(ids[:tokens]))  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    parser.add_argument("--sae", help="SAE id (default: the widest with a meta-SAE)")
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement and side")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the in-process side")
    parser.add_argument("--lm-checkpoint", type=Path, help="dequantised SmolLM2 (default: the build's, else the GGUF)")
    parser.add_argument("--quick", action="store_true", help="20 calls")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    calls = 20 if args.quick else args.calls

    import torch

    from services.runtime.config import load_config
    from training.sae.activations import ResidualStream, load_language_model
    from training.sae.saelens_format import load_saelens

    config = load_config()
    repository = ModelRepository(args.repository or config.model_repository)
    saes = [repository.get(n) for n in repository.models() if repository.get(n).kind == "sae"]
    if not saes:
        print(f"no SAEs in {repository.root}; build them with `facet models build`", file=sys.stderr)
        return 1
    entry = repository.get(args.sae) if args.sae else max(saes, key=lambda e: (("meta_model" in e.metadata["properties"]), e.metadata["properties"]["width"]))
    props = entry.metadata["properties"]
    checkpoint = args.lm_checkpoint or config.data_dir / "sae-build" / "lm"
    torch.set_num_threads(args.threads)
    lm = load_language_model(checkpoint_cache=checkpoint if (checkpoint / "config.json").is_file() else None)
    text = held_out_text(lm.tokenizer, TEXT_TOKENS)
    stream = ResidualStream(lm, int(props["layer"]))
    sae, _ = load_saelens(entry.file("weights").parent)
    sae.eval()

    @torch.no_grad()
    def encode_in_process() -> object:
        ids = lm.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        latents = sae.encode(stream(ids)[0, 1:])
        return latents.topk(8, dim=-1)

    meta_entry = repository.get(props["meta_model"])
    from services.backends.onnx_session import create_session

    meta_session = create_session(meta_entry.model_file, providers="cpu", intra_op_num_threads=args.threads)
    with np.load(meta_entry.file("analysis")) as arrays:
        codes = arrays["codes"]
    w_dec = sae.W_dec.detach().numpy()
    unit = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    latents = rng.integers(0, int(props["width"]), size=calls).tolist()

    def decompose_in_process(latent: int) -> object:
        code = meta_session.run(None, {"x": unit[latent : latent + 1]})[0][0]
        active = np.argsort(-code)[:4]
        return [np.argsort(-codes[:, m])[:8] for m in active if code[m] > 0]

    server = BenchmarkService("sae", repository.root, {"FACET_LOG_LEVEL": "warning"})
    try:
        address = server.start().address
        with sdk.Client(sae=address) as client:
            tokens = client.encode_text(entry.name, text)
            assert len(tokens) == TEXT_TOKENS, len(tokens)
            for _ in range(3):  # warm-up both sides
                encode_in_process()
                client.encode_text(entry.name, text)
                client.decompose_latent(entry.name, 0)
                decompose_in_process(0)
            results: dict[str, dict[str, list[float]]] = {"EncodeText": {"facet": [], "in-process": []}, "DecomposeLatent": {"facet": [], "in-process": []}}
            for latent in latents:
                results["EncodeText"]["facet"].append(timed_ms(lambda: client.encode_text(entry.name, text)))
                results["EncodeText"]["in-process"].append(timed_ms(encode_in_process))
                results["DecomposeLatent"]["facet"].append(timed_ms(lambda latent=latent: client.decompose_latent(entry.name, latent)))  # type: ignore[misc]
                results["DecomposeLatent"]["in-process"].append(timed_ms(lambda latent=latent: decompose_in_process(latent)))  # type: ignore[misc]
    finally:
        server.stop()
    summary = {
        call: {side: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "mean_ms": statistics.fmean(v)} for side, v in sides.items()}
        for call, sides in results.items()
    }
    print(f"SAE service latency, {entry.name} (width {props['width']}, layer {props['layer']}), {calls} calls per side, 1 client")
    labels = {"EncodeText": f"EncodeText, {TEXT_TOKENS} tokens", "DecomposeLatent": "DecomposeLatent, top_n 4"}
    rows = []
    for call, sides in summary.items():
        f, b = sides["facet"], sides["in-process"]
        rows.append((labels[call], f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f}", f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f}", f"{f['p50_ms'] / b['p50_ms']:.2f}x"))
    header = ("call", "Facet p50 / p99 (ms)", "in-process p50 / p99 (ms)", "Facet / in-process (p50)")
    print(table_text(header, rows))
    print("- in-process EncodeText: PyTorch, LM truncated at the layer + SAE from its SAELens weights (what SAELens users run);")
    print("  in-process DecomposeLatent: the same meta-SAE ONNX session and stored arrays, no RPC.")
    if server.problems:
        print("server log problems: " + "; ".join(server.problems))
    if args.json:
        args.json.write_text(json.dumps({"sae": entry.name, "calls": calls, "results": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
