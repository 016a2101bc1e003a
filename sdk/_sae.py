"""Request building and response parsing for the SAE service, shared by Client and AsyncClient."""

from __future__ import annotations

import numpy as np

from sdk._call import Call
from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import common_pb2, sae_pb2
from sdk._sae_types import (
    ActivatingContext,
    Explanation,
    LatentDecomposition,
    MetaLatent,
    SaeComparison,
    SaeInfo,
    TokenLatents,
)
from sdk._tensors import tensor_from_numpy, tensor_to_numpy

SERVICE = "sae"


def _info(m: sae_pb2.SaeInfo) -> SaeInfo:
    return SaeInfo(
        id=m.id,
        base_model=m.base_model,
        layer=m.layer,
        hook=m.hook,
        d_in=m.d_in,
        width=m.width,
        architecture=m.architecture,
        k=m.k,
        family=m.family,
        corpus=m.corpus,
        training_tokens=m.training_tokens,
        metrics={f.name: float(getattr(m.metrics, f.name)) for f in m.metrics.DESCRIPTOR.fields},
        meta_width=m.meta_width,
        meta_variance_explained=m.meta_variance_explained,
        meta_mean_active=m.meta_mean_active,
        top_activations_stored=m.top_activations_stored,
    )


def _context(c: sae_pb2.ActivatingContext) -> ActivatingContext:
    return ActivatingContext(tokens=list(c.tokens), highlight=c.highlight, activation=c.activation)


def _explanation(e: sae_pb2.Explanation) -> Explanation:
    return Explanation([_context(c) for c in e.top_contexts], [(t.token, t.score) for t in e.top_output_tokens])


def _meta(m: sae_pb2.MetaLatent) -> MetaLatent:
    return MetaLatent(m.index, list(m.member_latents), list(m.member_activations), m.member_count, _explanation(m.explanation))


def _activations(values: np.ndarray) -> common_pb2.Tensor:
    array = np.asarray(values)
    if array.ndim != 2 or array.dtype.kind != "f":
        raise InvalidArgument(f"activations must be a 2-D float array [n, d_in], got {array.dtype} {list(array.shape)}")
    return tensor_from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def list_saes() -> Call[list[SaeInfo]]:
    return Call(SERVICE, "ListSaes", sae_pb2.ListSaesRequest(), lambda r: [_info(s) for s in r.saes])


def get_sae(sae: str) -> Call[SaeInfo]:
    return Call(SERVICE, "GetSae", sae_pb2.GetSaeRequest(sae=sae), _info)


def encode_text(sae: str, text: str, top_k: int) -> Call[list[TokenLatents]]:
    return Call(
        SERVICE,
        "EncodeText",
        sae_pb2.EncodeTextRequest(sae=sae, text=text, top_k=top_k),
        lambda r: [TokenLatents(t.position, t.token_id, t.token, list(t.latents), list(t.activations), t.excluded) for t in r.tokens],
    )


def encode_activations(sae: str, activations: np.ndarray, top_k: int) -> Call[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    def parse(r: sae_pb2.EncodeActivationsResponse) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if top_k == 0:
            return tensor_to_numpy(r.latents, "latents")
        return tensor_to_numpy(r.indices, "indices"), tensor_to_numpy(r.values, "values")

    request = sae_pb2.EncodeActivationsRequest(sae=sae, activations=_activations(activations), top_k=top_k)
    return Call(SERVICE, "EncodeActivations", request, parse)


def reconstruct(sae: str, activations: np.ndarray) -> Call[tuple[np.ndarray, np.ndarray]]:
    return Call(
        SERVICE,
        "Reconstruct",
        sae_pb2.ReconstructRequest(sae=sae, activations=_activations(activations)),
        lambda r: (tensor_to_numpy(r.reconstruction, "reconstruction"), np.asarray(r.squared_error, dtype=np.float32)),
    )


def top_activations(sae: str, latent: int, k: int) -> Call[list[ActivatingContext]]:
    request = sae_pb2.TopActivationsRequest(sae=sae, latent=latent, k=k)
    return Call(SERVICE, "TopActivations", request, lambda r: [_context(c) for c in r.contexts])


def decompose_latent(sae: str, latent: int, top_n: int, members: int, contexts: int) -> Call[LatentDecomposition]:
    def parse(r: sae_pb2.LatentDecomposition) -> LatentDecomposition:
        metas = [(_meta(m.meta_latent), m.activation) for m in r.meta_latents]
        return LatentDecomposition(r.sae, r.latent, _explanation(r.explanation), metas, r.reconstruction_cosine)

    request = sae_pb2.DecomposeLatentRequest(sae=sae, latent=latent, top_n=top_n, members=members, contexts=contexts)
    return Call(SERVICE, "DecomposeLatent", request, parse)


def get_meta_latent(sae: str, meta_latent: int, members: int, contexts: int) -> Call[MetaLatent]:
    request = sae_pb2.GetMetaLatentRequest(sae=sae, meta_latent=meta_latent, members=members, contexts=contexts)
    return Call(SERVICE, "GetMetaLatent", request, _meta)


def compare_saes(small: str, large: str, threshold: float | None) -> Call[SaeComparison]:
    def parse(r: sae_pb2.SaeComparison) -> SaeComparison:
        return SaeComparison(
            small=r.small,
            large=r.large,
            threshold=r.threshold,
            novel_latents=r.novel_latents,
            reconstruction_latents=r.reconstruction_latents,
            novel_shares={round(s.threshold, 4): s.share for s in r.novel_shares},
            small_mse=r.small_mse,
            large_mse=r.large_mse,
            swap_mse=np.asarray(r.swap_mse, dtype=np.float32),
            swap_threshold=r.swap_threshold,
            max_cosine=tensor_to_numpy(r.max_cosine, "max_cosine"),
            nearest=tensor_to_numpy(r.nearest, "nearest"),
            delta_mse=tensor_to_numpy(r.delta_mse, "delta_mse"),
            latents_that_help=r.latents_that_help,
            evaluation_tokens=r.evaluation_tokens,
        )

    request = sae_pb2.CompareSaesRequest(small=small, large=large, threshold=threshold)
    return Call(SERVICE, "CompareSaes", request, parse)
