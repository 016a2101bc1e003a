"""Ray Serve's request-router serialization is safe across threads once Facet's Serve module is
imported: a service loads its models side by side (deploying one while polling another's status),
and Ray Serve 2.60 builds each RequestRouterConfig by registering a module with cloudpickle's
global by-value registry, dumping, and unregistering — so concurrent builds broke each other
(a next-frame service on Ray failed to start in CI: "Can't pickle ... it's not the same object").
Without the lock in services.backends.ray_serve_app this test fails (errors in every run of 800
builds, checked)."""

from __future__ import annotations

import threading

from ray.serve.config import RequestRouterConfig

import services.backends.ray_serve_app  # noqa: F401 - installs the lock


def test_request_router_configs_built_in_eight_threads_at_once_never_fail() -> None:
    errors: list[str] = []

    def build() -> None:
        for _ in range(100):
            try:
                RequestRouterConfig()
            except Exception as exc:  # noqa: BLE001 - collected and shown
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f"{len(errors)} of 800 builds failed, e.g. {errors[0]}"
