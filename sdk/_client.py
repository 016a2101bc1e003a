"""`Client` and `AsyncClient`: one mixin per capability on one transport, nothing more.

Adding a capability: its module defines `<Name>Methods` and `Async<Name>Methods`; list them here.
"""

from __future__ import annotations

from sdk._nextframe import AsyncNextFrameMethods, NextFrameMethods
from sdk._paraphrase import AsyncParaphraseMethods, ParaphraseMethods
from sdk._phenotype import AsyncPhenotypeMethods, PhenotypeMethods
from sdk._rerank import AsyncRerankMethods, RerankMethods
from sdk._retrieval import AsyncRetrievalMethods, RetrievalMethods
from sdk._sae import AsyncSaeMethods, SaeMethods
from sdk._transport import AsyncTransport, SyncTransport


class Client(SaeMethods, NextFrameMethods, RetrievalMethods, RerankMethods, ParaphraseMethods, PhenotypeMethods, SyncTransport):
    """Blocking client for every Facet service, one channel per service, opened on first use.

    `sdk.Client(address=None, /, *, api_key=None, timeout_s=DEFAULT_TIMEOUT_S,
    max_message_bytes=MAX_MESSAGE_BYTES, retry=None, tls=None, root_certificates=None,
    client_cert=None, client_key=None, **addresses)`, e.g.
    `sdk.Client(sae="gpu-1:50051", nextframe="gpu-2:50052")`, or over TLS
    `sdk.Client(tls=True, root_certificates="ca.crt")`.

    Args:
        address: the retrieval service's `host:port` (positional, as before the other
            services existed); the same as `retrieval=`.
        **addresses: `host:port` per capability, keyed by its name in
            `sdk._contract.CAPABILITIES`. A missing one comes from `FACET_<NAME>_ADDR`, else
            localhost and the capability's default port (where `facet up` starts it).
        api_key: sent as `authorization: Bearer <key>`; None reads `FACET_API_KEY`, "" sends none.
        timeout_s: default deadline of every call in seconds, > 0 (each method takes its own).
            It covers all of a call's attempts and the pauses between them.
        max_message_bytes: largest message sent or received, in bytes.
        retry: when calls that failed with UNAVAILABLE are sent again (idempotent calls only,
            with exponential backoff and jitter, within `budget_s` and the call's deadline);
            None takes `sdk.RetryPolicy.from_env()`: a 10 s budget unless `FACET_RETRY_*`
            variables say otherwise. `sdk.RetryPolicy(max_attempts=1)` turns retries off.
            RESOURCE_EXHAUSTED is never retried: an API key over its rate limit raises
            `sdk.ResourceExhausted` whose `retry_after_s` says when to try again.
        tls: connect with TLS (every service of this client). None reads `FACET_TLS`
            (1/true/yes/on; unset: off); giving root_certificates or client_cert turns it on.
        root_certificates: the CA certificate(s) that signed the servers' certificates, PEM
            bytes or a path to a PEM file; None reads `FACET_TLS_ROOT_CERTIFICATES` (a path),
            else the system's trust store.
        client_cert: the client's certificate for mTLS (PEM bytes or path); None reads
            `FACET_TLS_CLIENT_CERT`. Needs client_key.
        client_key: its private key (PEM bytes or path, unencrypted); None reads
            `FACET_TLS_CLIENT_KEY`. Needs client_cert.
    Raises:
        TypeError: an address keyword that is not a capability (the message lists them).
        InvalidArgument: timeout_s not > 0, an api_key that cannot be sent as a header, a
            retry that is not a RetryPolicy, an invalid FACET_RETRY_* variable; a tls that is not
            a bool, FACET_TLS not a yes/no word, tls=False with certificates, client_cert
            without client_key (or the reverse), a certificate path with no file or a file
            that is not PEM (each names the argument or the variable).

    Example::

        import sdk
        with sdk.Client() as client:
            vectors = client.embed(["a sentence", "another"])   # float32 (2, 384)
            client.create_collection("notes")
            client.upsert("notes", ids=["a"], texts=["Paris is in France."], metadata=[{"lang": "en"}])
            hits = client.search("notes", "Which country is Paris in?", top_k=5)
            ranked = client.rerank("Which country is Paris in?", [h.text for h in hits], top_n=3)
            for p in client.paraphrase("How do I learn Python quickly?", n=3, strategy="diverse_beam"):
                print(p.text, p.logprob, p.similarity, p.source_bleu)

    Errors raise subclasses of `sdk.FacetError`. Every method checks its arguments before
    sending and raises `sdk.InvalidArgument` (also a ValueError and a TypeError) naming the
    argument: a list of strings (`texts`, `ids`) is never one string; strings must encode as
    UTF-8; integers are ints within the field's range; numbers and arrays are finite (float32);
    metadata and filters are JSON with integers within +-2**53, at most 16 levels deep;
    `timeout_s` is None or > 0. A reply that fails the SDK's checks raises `sdk.ProtocolError`
    (an InternalError: the server's fault) with the call's request id. Calls that fail with
    UNAVAILABLE are retried when idempotent (see `sdk.RetryPolicy`).

    Connection failures that look like a TLS mismatch (a plaintext client and a TLS server, a
    missing client certificate under mTLS, an untrusted server certificate) raise
    `sdk.Unavailable` whose message ends with a bracketed hint on what to set.

    Limits in the method docstrings written as `section.key` (e.g. `retrieval.max_top_k`) are
    keys of the service's config: a deployment may change them, and an InvalidArgument's message
    gives the value in force.
    """

    _positional_capability = "retrieval"


class AsyncClient(
    AsyncSaeMethods, AsyncNextFrameMethods, AsyncRetrievalMethods, AsyncRerankMethods, AsyncParaphraseMethods, AsyncPhenotypeMethods, AsyncTransport
):
    """The same methods as `Client`, awaitable, on `grpc.aio` channels; the same constructor.

    Example::

        async with sdk.AsyncClient() as client:
            vectors = await client.embed(["a sentence"])
            async for frame in client.rollout(model, clip[:5], horizon=30):
                ...
    """

    _positional_capability = "retrieval"
