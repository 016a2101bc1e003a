"""Next-frame service speed: Rollout frames/s over gRPC streaming and PredictNext p50/p99, side by
side with the same model in PyTorch in this process.

    python load/bench_nextframe.py [--repository DIR] [--model ID] [--horizon 64] [--rounds 5] [--quick] [--json PATH]

The frame model comes from the model repository (`python -m training.nextframe.build`); the
PyTorch side loads the same weights (`frame_model.pt` beside the ONNX file). Rounds alternate
between the two sides so machine noise hits both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load.harness import BenchmarkService, default_model_repository, percentile, table_text  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    parser.add_argument("--model", help="frame model id (default: the first)")
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="PredictNext calls per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="horizon 16, 2 rounds, 20 calls")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.horizon, args.rounds, args.calls = 16, 2, 20

    import torch

    from services.nextframe.simulators import simulate
    from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, rollout, to_unit

    repository = ModelRepository(args.repository or default_model_repository())
    models = [n for n in repository.models() if repository.get(n).kind == "frame-model"]
    if not models:
        print(f"no frame models in {repository.root}; build them with `python -m training.nextframe.build`", file=sys.stderr)
        return 1
    entry = repository.get(args.model or models[0])
    props = entry.metadata["properties"]
    torch.set_num_threads(args.threads)
    model = FrameUNet(FrameModelConfig(**props["model"]))
    model.load_state_dict(torch.load(entry.file("weights"), weights_only=True))
    model.eval()
    clip = simulate(props["dataset"], np.array([(props["low"] + props["high"]) / 2]), CONTEXT, 0).frames[0]
    context = to_unit(torch.from_numpy(clip))[None]

    server = BenchmarkService("nextframe", repository.root, {"FACET_LOG_LEVEL": "warning"})
    rates: dict[str, list[float]] = {"facet": [], "pytorch": []}
    latency: dict[str, list[float]] = {"facet": [], "pytorch": []}
    try:
        address = server.start().address
        with sdk.Client(nextframe=address) as client:
            list(client.rollout(entry.name, clip, horizon=4))  # warm-up
            rollout(model, context, 4)
            for _ in range(args.rounds):
                start = time.perf_counter()
                n = sum(1 for _ in client.rollout(entry.name, clip, horizon=args.horizon))
                rates["facet"].append(n / (time.perf_counter() - start))
                start = time.perf_counter()
                rollout(model, context, args.horizon)
                rates["pytorch"].append(args.horizon / (time.perf_counter() - start))
            for _ in range(args.calls):
                start = time.perf_counter()
                client.predict_next(entry.name, clip)
                latency["facet"].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                with torch.no_grad():
                    (model(context).clamp(0, 1) * 255).round().to(torch.uint8)
                latency["pytorch"].append((time.perf_counter() - start) * 1000)
    finally:
        server.stop()
    f_rate, p_rate = statistics.median(rates["facet"]), statistics.median(rates["pytorch"])
    summary = {
        "model": entry.name,
        "rollout_frames_per_s": {"facet": f_rate, "pytorch": p_rate, "ratio": f_rate / p_rate},
        "predict_next_ms": {side: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for side, v in latency.items()},
    }
    print(f"Next-frame speed, {entry.name} ({props['model']}), horizon {args.horizon}, {args.rounds} rounds, {args.calls} calls")
    f, p = summary["predict_next_ms"]["facet"], summary["predict_next_ms"]["pytorch"]  # type: ignore[index]
    rows = [
        ("Rollout frames/s (median of rounds)", f"{f_rate:.1f}", f"{p_rate:.1f}", f"{f_rate / p_rate:.2f}x"),
        ("PredictNext p50 / p99 (ms)", f"{f['p50']:.2f} / {f['p99']:.2f}", f"{p['p50']:.2f} / {p['p99']:.2f}", ""),
    ]
    print(table_text(("measure", "Facet (gRPC)", "PyTorch in-process", "ratio"), rows))
    if server.problems:
        print("server log problems: " + "; ".join(server.problems))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
