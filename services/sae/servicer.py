"""The SAE gRPC servicer: validation, the LM prefix / encoders / decoders through the backend,
and the analyses stored at build time (read through the catalog)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
from google.protobuf.message import Message

from sdk._proto.facet.v1 import common_pb2, sae_pb2, sae_pb2_grpc
from sdk._tensors import tensor_from_numpy, tensor_to_numpy
from services.backends import create_backend
from services.model_repository import ModelRepository
from services.runtime.config import FacetConfig
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.outputs import finite_output
from services.runtime.server import FacetService
from services.sae.catalog import Catalog, Context, Explanation, MetaSae, Prop, SaeEntry, compatible
from services.sae.config import SaeConfig

log = logging.getLogger(__name__)



def _optional(request: Message, field: str, default: int, low: int, high: int) -> int:
    """An optional count: unset takes `default` (at most `high`); a set value must be low..high."""
    if not request.HasField(field):
        return min(default, high)
    value = int(getattr(request, field))
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be {low}..{high} (unset: {min(default, high)}), got {value}")
    return value


def _required_index(request: Message, field: str, size: int, of: str) -> int:
    """A required index into `size` units (latent, meta_latent)."""
    if not request.HasField(field):
        raise InvalidArgument(f"{field} is required: 0..{size - 1} for {of}")
    value = int(getattr(request, field))
    if not 0 <= value < size:
        raise InvalidArgument(f"{field} {value} is out of range: {of} has 0..{size - 1}")
    return value


def _context(c: Context) -> sae_pb2.ActivatingContext:
    w = c.tokens
    return sae_pb2.ActivatingContext(
        text=w.text,
        tokens=[
            sae_pb2.ContextToken(token_id=i, token=piece, start=s, end=e, partial=p, special=sp)
            for i, piece, s, e, p, sp in zip(w.ids.tolist(), w.pieces(), w.starts.tolist(), w.ends.tolist(), w.partial.tolist(), w.special.tolist(), strict=True)
        ],
        highlight=c.highlight,
        activation=c.activation,
    )


def _explanation(e: Explanation) -> sae_pb2.Explanation:
    return sae_pb2.Explanation(
        top_contexts=[_context(c) for c in e.contexts],
        top_output_tokens=[sae_pb2.TokenScore(token=t.token, score=t.score, partial=t.partial, special=t.special) for t in e.output_tokens],
    )


def _info(sae: SaeEntry) -> sae_pb2.SaeInfo:
    p = sae.props
    m = p.get(Prop.METRICS, {})
    info = sae_pb2.SaeInfo(
        id=sae.name,
        base_model=p.get(Prop.BASE_MODEL, ""),
        layer=int(p.get(Prop.LAYER, 0)),
        hook=p.get(Prop.HOOK, ""),
        d_in=sae.d_in,
        width=sae.width,
        architecture=p.get(Prop.ARCHITECTURE, ""),
        k=int(p.get(Prop.K) or 0),
        family=p.get(Prop.FAMILY, ""),
        corpus=p.get(Prop.CORPUS, ""),
        training_tokens=int(p.get(Prop.TRAINING_TOKENS, 0)),
        # a metric that does not apply (CE of an encoder LM: NaN) is left unset
        metrics=sae_pb2.SaeMetrics(**{f: m[f] for f in sae_pb2.SaeMetrics.DESCRIPTOR.fields_by_name if f in m and np.isfinite(m[f])}),
        top_activations_stored=sae.explained.stored,
        model_version=sae.entry.version,
    )
    if sae.meta is not None:
        info.meta_width = sae.meta.width
        info.meta_variance_explained = float(p.get(Prop.META_VARIANCE_EXPLAINED, 0.0))
        info.meta_mean_active = float(p.get(Prop.META_MEAN_ACTIVE, 0.0))
    return info


class SaeService(sae_pb2_grpc.SaeServicer, FacetService):
    name = "sae"

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._limits = config.section(SaeConfig)
        self._backend = create_backend(config)
        self._catalog: Catalog | None = None

    def register(self, server: grpc.aio.Server) -> None:
        sae_pb2_grpc.add_SaeServicer_to_server(self, server)

    async def start(self) -> None:
        repository = ModelRepository(self._config.model_repository)
        catalog = await asyncio.get_running_loop().run_in_executor(None, Catalog, repository)
        if not catalog.saes:
            raise FailedPrecondition(f"the model repository {repository.root} holds no SAEs; build them with `facet models build` (the default family) or `facet sae build`")
        models = [*catalog.lm_models]
        for sae in catalog.saes.values():
            models += [sae.name, sae.props[Prop.DECODER_MODEL]] + ([sae.meta.name] if sae.meta is not None else [])
        await self._backend.load_all(models)
        self._catalog = catalog
        log.info("serving %d SAEs: %s", len(catalog.saes), ", ".join(catalog.saes))

    async def healthy(self) -> bool:
        return await self._backend.serving()

    async def stop(self) -> None:
        await self._backend.close()

    @property
    def catalog(self) -> Catalog:
        assert self._catalog is not None, "start() first"
        return self._catalog

    # -- helpers -----------------------------------------------------------------------------

    def _rows(self, sae: SaeEntry, tensor: common_pb2.Tensor) -> np.ndarray:
        if not tensor.ByteSize():
            raise InvalidArgument(f"activations are missing; send float32 [n, {sae.d_in}]")
        rows = tensor_to_numpy(tensor, "activations")
        if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != sae.d_in:
            raise InvalidArgument(f"activations must be float32 [n, {sae.d_in}] for SAE '{sae.name}', got {rows.dtype} {list(rows.shape)}")
        if not 1 <= len(rows) <= self._limits.max_rows:
            raise InvalidArgument(f"activations have {len(rows)} rows; send 1..{self._limits.max_rows} per call")
        largest = float(np.abs(rows).max())
        if largest > self._limits.max_abs_activation:
            raise InvalidArgument(
                f"activations have an entry of magnitude {largest:.3g}; entries must be within ±{self._limits.max_abs_activation:g} "
                "(config key sae.max_abs_activation), or the SAE's outputs overflow float32"
            )
        return rows

    async def _encode(self, sae: SaeEntry, rows: np.ndarray) -> np.ndarray:
        latents = (await self._backend.infer(sae.name, {"x": np.ascontiguousarray(rows, dtype=np.float32)}))["latents"]
        return finite_output(f"the latents of SAE '{sae.name}'", latents)

    async def _decode(self, sae: SaeEntry, latents: np.ndarray) -> np.ndarray:
        recon = (await self._backend.infer(sae.props[Prop.DECODER_MODEL], {"latents": latents}))["reconstruction"]
        return finite_output(f"the reconstruction of SAE '{sae.name}'", recon)

    def _meta(self, sae: SaeEntry) -> MetaSae:
        if sae.meta is None:
            with_meta = [s.name for s in self.catalog.saes.values() if s.meta is not None]
            raise FailedPrecondition(f"no meta-SAE was trained on SAE '{sae.name}'; these have one: {', '.join(with_meta) or 'none'}")
        return sae.meta

    def _meta_latent(self, sae: SaeEntry, index: int, members: int, contexts: int, exclude: int = -1) -> sae_pb2.MetaLatent:
        meta = self._meta(sae)
        ids, values, count = meta.members(index, members, exclude)
        return sae_pb2.MetaLatent(
            index=index,
            member_latents=ids,
            member_activations=values,
            member_count=count,
            explanation=_explanation(meta.explained.explanation(index, contexts)),
        )

    # -- RPCs --------------------------------------------------------------------------------

    async def ListSaes(self, request: sae_pb2.ListSaesRequest, context: grpc.aio.ServicerContext) -> sae_pb2.ListSaesResponse:
        return sae_pb2.ListSaesResponse(saes=[_info(s) for s in self.catalog.sorted()])

    async def GetSae(self, request: sae_pb2.GetSaeRequest, context: grpc.aio.ServicerContext) -> sae_pb2.SaeInfo:
        return _info(self.catalog.get(request.sae))

    async def EncodeText(self, request: sae_pb2.EncodeTextRequest, context: grpc.aio.ServicerContext) -> sae_pb2.EncodeTextResponse:
        sae = self.catalog.get(request.sae)
        top_k = _optional(request, "top_k", 8, 1, min(self._limits.max_top_k, sae.width))
        if not request.text.strip():
            raise InvalidArgument(f"text is empty; send 1..{self._limits.max_text_chars} characters")
        if len(request.text) > self._limits.max_text_chars:
            raise InvalidArgument(f"text has {len(request.text)} characters; the limit is {self._limits.max_text_chars}")
        lm = sae.props[Prop.LM_MODEL]
        tokens = self.catalog.tokens[lm].encode(request.text, allow_special=request.allow_special_tokens)
        n = len(tokens)
        if n > self._limits.max_text_tokens:
            raise InvalidArgument(f"text has {n} tokens; the limit is {self._limits.max_text_tokens}: split it")
        batch = tokens.ids[None, :].astype(np.int64)
        resid = (await self._backend.infer(lm, {"input_ids": batch, "attention_mask": np.ones_like(batch)}))["resid"][0, :n]
        finite_output(f"the residual stream of '{lm}'", resid)
        # Encoded: not position 0 (attention sink), not special tokens, not massive-norm tokens.
        included = ~tokens.special
        included[0] = False
        norms = np.linalg.norm(resid, axis=1)
        if included.any():
            included &= norms <= self._limits.massive_norm_factor * np.median(norms[included])
        latents = np.zeros((n, sae.width), dtype=np.float32)
        if included.any():
            latents[included] = await self._encode(sae, resid[included])
        out = []
        for pos, (token_id, piece, start, end, partial, special) in enumerate(
            zip(tokens.ids.tolist(), tokens.pieces(), tokens.starts.tolist(), tokens.ends.tolist(), tokens.partial.tolist(), tokens.special.tolist(), strict=True)
        ):
            row = latents[pos]
            top = np.argsort(-row, kind="stable")[:top_k]
            top = top[row[top] > 0]
            out.append(
                sae_pb2.TokenLatents(
                    position=pos, token_id=token_id, token=piece, latents=top.tolist(), activations=row[top].tolist(),
                    excluded=not included[pos], start=start, end=end, partial=partial, special=special,
                )  # fmt: skip
            )
        return sae_pb2.EncodeTextResponse(sae=sae.name, tokens=out)

    async def EncodeActivations(
        self, request: sae_pb2.EncodeActivationsRequest, context: grpc.aio.ServicerContext
    ) -> sae_pb2.EncodeActivationsResponse:
        sae = self.catalog.get(request.sae)
        high = min(self._limits.max_top_k, sae.width)
        top_k = request.top_k if request.HasField("top_k") else None
        if top_k is not None and not 1 <= top_k <= high:
            raise InvalidArgument(f"top_k must be 1..{high}, or unset for dense latents; got {top_k}")
        latents = await self._encode(sae, self._rows(sae, request.activations))
        if top_k is None:
            return sae_pb2.EncodeActivationsResponse(latents=tensor_from_numpy(latents))
        order = np.argsort(-latents, axis=1, kind="stable")[:, :top_k].astype(np.int32)
        values = np.take_along_axis(latents, order, axis=1)
        return sae_pb2.EncodeActivationsResponse(indices=tensor_from_numpy(order), values=tensor_from_numpy(values))

    async def Reconstruct(self, request: sae_pb2.ReconstructRequest, context: grpc.aio.ServicerContext) -> sae_pb2.ReconstructResponse:
        sae = self.catalog.get(request.sae)
        rows = self._rows(sae, request.activations)
        recon = await self._decode(sae, await self._encode(sae, rows))
        squared = finite_output("the squared error", ((rows.astype(np.float64) - recon) ** 2).sum(1)).astype(np.float32)
        finite_output("the squared error (float32)", squared)
        reply = sae_pb2.ReconstructResponse(reconstruction=tensor_from_numpy(recon), squared_error=squared.tolist())
        variance = float(((rows.astype(np.float64) - rows.mean(0, dtype=np.float64)) ** 2).sum())
        if len(rows) > 1 and variance > 0:
            reply.fvu = float(finite_output("the FVU", np.array([squared.astype(np.float64).sum() / variance]))[0])
        return reply

    async def TopActivations(
        self, request: sae_pb2.TopActivationsRequest, context: grpc.aio.ServicerContext
    ) -> sae_pb2.TopActivationsResponse:
        sae = self.catalog.get(request.sae)
        latent = _required_index(request, "latent", sae.width, f"SAE '{sae.name}'")
        k = _optional(request, "k", 10, 1, sae.explained.stored)
        return sae_pb2.TopActivationsResponse(
            contexts=[_context(c) for c in sae.explained.contexts(latent, k)],
            firing_rate=float(sae.explained.firing_rate[latent]),
        )

    async def DecomposeLatent(
        self, request: sae_pb2.DecomposeLatentRequest, context: grpc.aio.ServicerContext
    ) -> sae_pb2.LatentDecomposition:
        sae = self.catalog.get(request.sae)
        latent = _required_index(request, "latent", sae.width, f"SAE '{sae.name}'")
        meta = self._meta(sae)
        top_n = _optional(request, "top_n", 4, 1, self._limits.max_top_n)
        members = _optional(request, "members", 8, 1, self._limits.max_members)
        contexts = _optional(request, "contexts", 3, 1, sae.explained.stored)
        direction = sae.unit_decoder[latent]
        code = finite_output(f"the meta-SAE code of latent {latent}", (await self._backend.infer(meta.name, {"x": direction[None, :]}))["latents"][0])
        active = [int(i) for i in np.argsort(-code, kind="stable")[:top_n] if code[i] > 0]
        recon = code @ meta.decoder + meta.bias
        cosine = float(recon @ direction / max(float(np.linalg.norm(recon)), 1e-12))
        return sae_pb2.LatentDecomposition(
            sae=sae.name,
            latent=latent,
            explanation=_explanation(sae.explained.explanation(latent, contexts)),
            meta_latents=[
                sae_pb2.MetaLatentActivation(
                    meta_latent=self._meta_latent(sae, m, members, contexts, exclude=latent), activation=float(code[m])
                )
                for m in active
            ],
            reconstruction_cosine=cosine,
        )

    async def GetMetaLatent(self, request: sae_pb2.GetMetaLatentRequest, context: grpc.aio.ServicerContext) -> sae_pb2.MetaLatent:
        sae = self.catalog.get(request.sae)
        meta = self._meta(sae)
        index = _required_index(request, "meta_latent", meta.width, f"the meta-SAE of '{sae.name}'")
        members = _optional(request, "members", 8, 1, self._limits.max_members)
        contexts = _optional(request, "contexts", 3, 1, meta.explained.stored)
        return self._meta_latent(sae, index, members, contexts)

    async def CompareSaes(self, request: sae_pb2.CompareSaesRequest, context: grpc.aio.ServicerContext) -> sae_pb2.SaeComparison:
        small, large = self.catalog.get(request.small), self.catalog.get(request.large)
        compatible(small, large)
        threshold = request.threshold if request.HasField("threshold") else self._limits.default_threshold
        if not 0 < threshold < 1:
            raise InvalidArgument(f"threshold must be in (0, 1), got {threshold}")
        s = large.stitching(small.name)
        max_cosine = s["max_cosine"].astype(np.float32)
        novel = int((max_cosine < threshold).sum())
        return sae_pb2.SaeComparison(
            small=small.name,
            large=large.name,
            threshold=threshold,
            novel_latents=novel,
            reconstruction_latents=len(max_cosine) - novel,
            novel_shares=[sae_pb2.NovelShare(threshold=float(t), share=float(v)) for t, v in zip(s["thresholds"], s["shares"], strict=True)],
            small_mse=float(s["small_mse"]),
            large_mse=float(s["large_mse"]),
            swap_mse=s["swap_mse"].astype(np.float32).tolist(),
            swap_threshold=float(s["threshold"]),
            max_cosine=tensor_from_numpy(max_cosine),
            nearest=tensor_from_numpy(s["nearest"].astype(np.int32)),
            delta_mse=tensor_from_numpy(s["delta_mse"].astype(np.float32)),
            latents_that_help=float((s["delta_mse"] < 0).mean()),
            evaluation_tokens=int(s["tokens"]),
        )
