"""What one call through Ray costs before any model runs: the floor under the Ray Serve backend.

    python load/bench_ray_handles.py [--calls 300]

Starts a local Ray head, deploys an empty Serve deployment (it returns its input) and an empty
actor, and times sequential calls from an asyncio loop with a retrieval-sized payload (three
int64 arrays of 1×12), as the Ray Serve backend sends them:

  - a Ray actor method call (the core's own round trip)
  - a Serve handle call, Ray's default (the request as an actor task, by reference)
  - a Serve handle call as the Ray Serve backend makes it: router on the caller's loop, the
    arrays by value over the replica's gRPC port (pickle)

The table gives p50 / p99 and each path's p50 as a ratio of the default handle's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `deploy`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

from load.harness import free_port, p50_p99_text, percentile, table_text  # noqa: E402

PAYLOAD = {name: np.ones((1, 12), np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}


async def timed(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    for _ in range(20):  # warm the connections
        await call()
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


async def measure(calls: int) -> dict[str, list[float]]:
    import ray
    from ray import serve

    @serve.deployment(logging_config={"enable_access_log": False}, ray_actor_options={"num_cpus": 0})
    class Echo:
        async def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return arrays

    @ray.remote(num_cpus=0)
    class EchoActor:
        async def call(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return arrays

    serve.run(Echo.bind(), name="bench-echo", route_prefix=None)  # type: ignore[attr-defined]
    actor = EchoActor.remote()  # type: ignore[attr-defined]
    default = serve.get_app_handle("bench-echo")
    facet = serve.get_app_handle("bench-echo")
    facet._init(_run_router_in_separate_loop=False)
    facet = facet.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")
    return {
        "Ray actor call": await timed(lambda: actor.call.remote(PAYLOAD), calls),
        "Serve handle, Ray's default": await timed(lambda: default.remote(PAYLOAD), calls),
        "Serve handle, as Facet calls it": await timed(lambda: facet.remote(PAYLOAD), calls),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)

    from deploy.ray_cluster import LocalRay
    from services.backends.ray_auth import opt_in_token_auth

    head = LocalRay(port=free_port(), dashboard_port=free_port(), temp_dir=Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))).start()
    try:
        opt_in_token_auth()
        import ray

        ray.init(address=head.address, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.WARNING)
        results = asyncio.run(measure(args.calls))
        ray.shutdown()
    finally:
        head.stop()
    reference = percentile(results["Serve handle, Ray's default"], 50)
    print(f"\nOne call through Ray, no model ({args.calls} sequential calls, 3 int64 arrays of 1×12)\n")
    rows = [(path, p50_p99_text(latencies), f"{percentile(latencies, 50) / reference:.2f}×") for path, latencies in results.items()]
    print(table_text(("path", "p50 / p99 ms", "p50 vs Serve's default"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
