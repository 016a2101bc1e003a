"""What gRPC's connection-age settings do to calls held open without a deadline (issue #13, part
3: the server options proposed for `services/runtime/server.py`, shown on a bare `grpc.aio` server).

    python load/faults_connection_age.py [--age-s 3] [--grace-s 2] [--off]

A server with `grpc.max_connection_age_ms` and `grpc.max_connection_age_grace_ms` (or, with
`--off`, without them, as Facet's server is today) and two clients without deadlines: one opens
a call and never sends its request, one reads the first message of a server stream and never
reads again. Prints how each ends (or that it is still open after age + grace + 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import grpc

SERVICE = "faults.Idle"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _frames(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(1_000_000):
        yield b"x" * 4096  # a 64x64 uint8 frame's worth


def _idle_clients(port: int, wait_s: float) -> None:
    never = threading.Event()

    def no_request() -> Iterator[bytes]:
        never.wait()
        yield b""

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    silent = channel.stream_unary(f"/{SERVICE}/Echo").future(no_request())  # no deadline
    stream = channel.unary_stream(f"/{SERVICE}/Frames")(b"")  # no deadline
    next(stream)  # the first frame, then nobody reads
    began = time.monotonic()
    while not silent.done() and time.monotonic() - began < wait_s:
        time.sleep(0.1)
    print(
        f"call that never sent its request: {silent.code().name if silent.done() else 'still open'} after {time.monotonic() - began:.1f} s"
    )
    if not silent.done():
        silent.cancel()
    stream_end = "still open"
    if stream.done() or time.monotonic() - began < wait_s:
        try:
            for _ in stream:
                pass
            stream_end = "OK"
        except grpc.RpcError as exc:
            stream_end = exc.code().name
    else:
        stream.cancel()
    print(f"stream read once, then never: {stream_end} after {time.monotonic() - began:.1f} s")
    never.set()
    channel.close()


async def run(age_s: float, grace_s: float, off: bool) -> None:
    options = (
        []
        if off
        else [
            ("grpc.max_connection_age_ms", int(age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(grace_s * 1000)),
        ]
    )
    server = grpc.aio.server(options=options)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Frames": grpc.unary_stream_rpc_method_handler(_frames),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"server options: {options or 'none (as Facet today)'}")
    try:
        await asyncio.to_thread(_idle_clients, port, age_s + grace_s + 10.0)
    finally:
        await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--age-s", type=float, default=3.0, help="grpc.max_connection_age_ms, in seconds")
    parser.add_argument("--grace-s", type=float, default=2.0, help="grpc.max_connection_age_grace_ms, in seconds")
    parser.add_argument("--off", action="store_true", help="no connection-age options (Facet's server today)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.age_s, args.grace_s, args.off))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
