"""SAE analysis (`facet.v1.Sae`): sparse autoencoders on a language model's residual stream.

After Leask et al. (ICLR 2025), "Sparse Autoencoders Do Not Find Canonical Units of Analysis":
SAE stitching compares a smaller and a larger SAE (the larger one's latents are *novel* or
*reconstruction* latents, Section 3), and a meta-SAE trained on an SAE's decoder decomposes its
latents into meta-latents (Section 4). The heavy analyses run when the models are built and are
stored with them; these calls read them. Limits named below are keys of the service's `[sae]`
config section. Printing a result gives a readable summary.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._proto.facet.v1 import common_pb2, sae_pb2, sae_pb2_grpc
from sdk._tensors import finite_floats, tensor_from_numpy, tensor_to_numpy
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

# Every SAE RPC reads: all are retried on UNAVAILABLE (sdk._retry).
SERVICE = Service(
    "sae",
    sae_pb2_grpc.SaeStub,
    idempotent=frozenset(
        {"ListSaes", "GetSae", "EncodeText", "EncodeActivations", "Reconstruct", "TopActivations",
         "DecomposeLatent", "CompareSaes", "GetMetaLatent"}
    ),
)  # fmt: skip

# -- results ------------------------------------------------------------------------------------


def _clean(token: str) -> str:
    return token.replace("\n", "\\n")


@dataclasses.dataclass(frozen=True)
class SaeInfo:
    """One SAE the service holds.

    Attributes:
        id: what every other call takes as `sae`.
        base_model: the language model, e.g. "SmolLM2-135M-Instruct".
        layer: the residual stream after this many transformer blocks.
        hook: the hook point, "resid_post".
        d_in: width of the residual stream (the SAE's input).
        width: number of latents.
        architecture: "relu", "topk", "batchtopk" or "jumprelu".
        k: active latents per token for the top-k variants; 0 otherwise.
        family: SAEs trained together from one activation cache share a family (and can be
            stitched).
        corpus: the text the SAE was trained on.
        training_tokens: tokens it was trained on.
        metrics: on held-out tokens: mse (squared error summed over dimensions, mean over
            tokens), fvu (fraction of variance unexplained, about the mean), l0 (mean active
            latents per token), dead_fraction, ce_clean / ce_with_sae / ce_zero_ablation /
            ce_increase (next-token cross-entropy, nats), ce_loss_recovered, held_out_tokens.
        meta_width: latents of the meta-SAE trained on its decoder; 0 when there is none.
        meta_variance_explained: share of the decoder's variance the meta-SAE explains.
        meta_mean_active: mean active meta-latents per latent.
        top_activations_stored: contexts stored per latent (the most `k`/`contexts` can ask).
    """

    id: str
    base_model: str
    layer: int
    hook: str
    d_in: int
    width: int
    architecture: str
    k: int
    family: str
    corpus: str
    training_tokens: int
    metrics: dict[str, float]
    meta_width: int = 0
    meta_variance_explained: float = 0.0
    meta_mean_active: float = 0.0
    top_activations_stored: int = 0


@dataclasses.dataclass(frozen=True)
class TokenLatents:
    """One token of `encode_text` and its strongest active latents.

    Attributes:
        position: index of the token in the text, from 0.
        token_id: the LM tokenizer's id.
        token: the token's text.
        latents: latent indices, strongest first, active ones only (at most top_k).
        activations: their activations, same order.
        excluded: the SAE was not applied: position 0 (the attention sink), a special token
            or a token with a massive residual norm (over 10x the text's median), which SAEs are
            not trained on.
        start: where the token's span in the text begins, in Unicode code points (str index).
        end: where it ends (exclusive); `text[start:end] == token`, and the spans of all tokens
            tile the text in order, so `"".join(t.token for t in tokens) == text`.
        partial: the token holds only part of a character (a byte-level piece of an emoji, a
            CJK character...). The character belongs to the first token holding any of its
            bytes; the later ones have an empty span (start == end). `token` is never U+FFFD.
        special: a special token; only with `allow_special_tokens=True` (always excluded).
    """

    position: int
    token_id: int
    token: str
    latents: list[int]
    activations: list[float]
    excluded: bool = False
    start: int = 0
    end: int = 0
    partial: bool = False
    special: bool = False

    def __str__(self) -> str:
        pairs = ", ".join(f"{lat}:{act:.2f}" for lat, act in zip(self.latents, self.activations, strict=True))
        return f"{_clean(self.token)!r:>16}  {'(excluded)' if self.excluded else pairs}"


@dataclasses.dataclass(frozen=True)
class ActivatingContext:
    """A window of corpus text around a token where a latent (or meta-latent) fired.

    Attributes:
        tokens: the window's tokens, as text: `text[start:end]` of each, joining to `text`
            (never U+FFFD; see `TokenLatents` for partial characters).
        highlight: index into `tokens` of the token where it fired.
        activation: its activation there.
        text: the window's text.
        spans: (start, end) of each token in `text`, in Unicode code points, in order and
            tiling it.
        partial: per token, whether it holds only part of a character.
        special: per token, whether it is a special token (the end-of-text between corpus
            documents, shown as its literal string).
        token_ids: per token, the LM tokenizer's id.
    """

    tokens: list[str]
    highlight: int
    activation: float
    text: str = ""
    spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    partial: list[bool] = dataclasses.field(default_factory=list)
    special: list[bool] = dataclasses.field(default_factory=list)
    token_ids: list[int] = dataclasses.field(default_factory=list)

    @property
    def marked(self) -> str:
        """The context with the firing token in [[ ]]."""
        return "".join(f"[[{t}]]" if i == self.highlight else t for i, t in enumerate(self.tokens)).replace("\n", " ")

    def __str__(self) -> str:
        return f"{self.activation:7.2f}  {self.marked}"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What a latent or meta-latent means, from data stored at build time.

    Attributes:
        top_contexts: the corpus contexts where it fires most, strongest first.
        top_output_tokens: (token, logit score): the tokens whose logits its decoder direction
            raises most (through the LM's final norm weights and unembedding), strongest first.
    """

    top_contexts: list[ActivatingContext]
    top_output_tokens: list[tuple[str, float]]

    def lines(self, indent: str = "  ") -> list[str]:
        """The explanation as indented text lines: promoted tokens, then one line per context."""
        out = [indent + "promotes: " + " ".join(repr(_clean(t)) for t, _ in self.top_output_tokens[:8])]
        out += [indent + str(c) for c in self.top_contexts]
        return out


@dataclasses.dataclass(frozen=True)
class MetaLatent:
    """A meta-latent: a direction of the meta-SAE shared by several SAE latents.

    Attributes:
        index: its index in the meta-SAE.
        member_latents: SAE latents that use it, strongest first (as many as asked).
        member_activations: its activation on each of them, same order.
        member_count: all latents that use it.
        explanation: its top contexts and promoted tokens.
    """

    index: int
    member_latents: list[int]
    member_activations: list[float]
    member_count: int
    explanation: Explanation

    def __str__(self) -> str:
        head = f"meta-latent {self.index}: used by {self.member_count} latents, e.g. {self.member_latents}"
        return "\n".join([head, *self.explanation.lines()])


@dataclasses.dataclass(frozen=True)
class LatentDecomposition:
    """A latent's decomposition by the meta-SAE trained on its SAE's decoder.

    Attributes:
        sae: the SAE's id.
        latent: the latent decomposed.
        explanation: the latent's own top contexts and promoted tokens.
        meta_latents: (meta-latent, activation) pairs, strongest first; the meta-latent's
            members leave this latent out.
        reconstruction_cosine: cosine between the meta-SAE's reconstruction and the latent's
            unit decoder direction (1: fully explained by its meta-latents).
    """

    sae: str
    latent: int
    explanation: Explanation
    meta_latents: list[tuple[MetaLatent, float]]
    reconstruction_cosine: float

    def __str__(self) -> str:
        lines = [f"latent {self.latent} of {self.sae}", *self.explanation.lines()]
        lines.append(
            f"decomposes into {len(self.meta_latents)} meta-latents (reconstruction cosine {self.reconstruction_cosine:.3f}):"
        )
        for meta, weight in self.meta_latents:
            lines.append(f"  {weight:.3f} x " + str(meta).replace("\n", "\n    "))
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SaeComparison:
    """SAE stitching of a smaller and a larger SAE of one LM and layer (Leask et al., Section 3).

    Attributes:
        small: the smaller SAE's id.
        large: the larger SAE's id.
        threshold: max decoder cosine below which a larger latent is novel.
        novel_latents: larger latents with max cosine to the smaller decoder below threshold.
        reconstruction_latents: the other larger latents.
        novel_shares: stored threshold -> share of the larger latents that are novel at it.
        small_mse: the smaller SAE's reconstruction MSE on the evaluation tokens.
        large_mse: the larger SAE's.
        swap_mse: float32 [groups + 2]: MSE after swapping 0, 1, 2, ... groups of linked
            latents from the smaller SAE into the larger one, best first, at swap_threshold;
            the last point also takes the larger SAE's decoder bias (it is the larger SAE).
        swap_threshold: the cosine threshold the swap curve was computed at.
        max_cosine: float32 [large width]: per larger latent, max decoder cosine to the smaller SAE.
        nearest: int32 [large width]: per larger latent, that smaller latent's index.
        delta_mse: float32 [large width]: per larger latent, the change of the smaller SAE's MSE
            when it is inserted (negative: it helps).
        latents_that_help: share of larger latents with delta_mse < 0.
        evaluation_tokens: tokens the MSEs were measured on.
    """

    small: str
    large: str
    threshold: float
    novel_latents: int
    reconstruction_latents: int
    novel_shares: dict[float, float]
    small_mse: float
    large_mse: float
    swap_mse: np.ndarray
    swap_threshold: float
    max_cosine: np.ndarray
    nearest: np.ndarray
    delta_mse: np.ndarray
    latents_that_help: float
    evaluation_tokens: int

    def __str__(self) -> str:
        shares = ", ".join(f"{t:.1f}: {s:.1%}" for t, s in sorted(self.novel_shares.items()))
        return (
            f"{self.small} -> {self.large}: {self.novel_latents} novel / {self.reconstruction_latents} reconstruction latents "
            f"at cosine {self.threshold:.2f}\n  novel share by threshold: {shares}\n"
            f"  MSE {self.small_mse:.4g} (small) -> {self.large_mse:.4g} (large) over {len(self.swap_mse) - 2} group swaps; "
            f"{self.latents_that_help:.1%} of larger latents lower the small SAE's MSE when inserted"
        )


# -- requests and responses ---------------------------------------------------------------------


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
        metrics={f.name: float(getattr(m.metrics, f.name)) for f in m.metrics.DESCRIPTOR.fields if m.metrics.HasField(f.name)},
        meta_width=m.meta_width,
        meta_variance_explained=m.meta_variance_explained,
        meta_mean_active=m.meta_mean_active,
        top_activations_stored=m.top_activations_stored,
    )


def _context(c: sae_pb2.ActivatingContext) -> ActivatingContext:
    return ActivatingContext(
        tokens=[t.token for t in c.tokens],
        highlight=c.highlight,
        activation=c.activation,
        text=c.text,
        spans=[(t.start, t.end) for t in c.tokens],
        partial=[t.partial for t in c.tokens],
        special=[t.special for t in c.tokens],
        token_ids=[t.token_id for t in c.tokens],
    )


def _explanation(e: sae_pb2.Explanation) -> Explanation:
    return Explanation([_context(c) for c in e.top_contexts], [(t.token, t.score) for t in e.top_output_tokens])


def _meta(m: sae_pb2.MetaLatent) -> MetaLatent:
    return MetaLatent(
        m.index, list(m.member_latents), list(m.member_activations), m.member_count, _explanation(m.explanation)
    )


def _activations(values: np.ndarray) -> common_pb2.Tensor:
    return tensor_from_numpy(check.float_array(values, "activations", ndim=2, shape="[n, d_in]"))


def _list_saes_call() -> Call[list[SaeInfo]]:
    return Call(SERVICE, "ListSaes", sae_pb2.ListSaesRequest(), lambda r: [_info(s) for s in r.saes])


def _get_sae_call(sae: str) -> Call[SaeInfo]:
    return Call(SERVICE, "GetSae", sae_pb2.GetSaeRequest(sae=check.text(sae, "sae")), _info)


def _encode_text_call(sae: str, text: str, top_k: int | None, allow_special_tokens: bool) -> Call[list[TokenLatents]]:
    def parse(r: sae_pb2.EncodeTextResponse) -> list[TokenLatents]:
        return [
            TokenLatents(t.position, t.token_id, t.token, list(t.latents), list(t.activations), t.excluded,
                         t.start, t.end, t.partial, t.special)  # fmt: skip
            for t in r.tokens
        ]

    request = sae_pb2.EncodeTextRequest(
        sae=check.text(sae, "sae"),
        text=check.text(text, "text"),
        top_k=check.optional_integer(top_k, "top_k"),
        allow_special_tokens=check.flag(allow_special_tokens, "allow_special_tokens"),
    )
    return Call(SERVICE, "EncodeText", request, parse)


def _encode_activations_call(
    sae: str, activations: np.ndarray, top_k: int | None
) -> Call[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    def parse(r: sae_pb2.EncodeActivationsResponse) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if top_k is None:
            return tensor_to_numpy(r.latents, "latents")
        return tensor_to_numpy(r.indices, "indices"), tensor_to_numpy(r.values, "values")

    request = sae_pb2.EncodeActivationsRequest(
        sae=check.text(sae, "sae"),
        activations=_activations(activations),
        top_k=check.optional_integer(top_k, "top_k"),
    )
    return Call(SERVICE, "EncodeActivations", request, parse)


def _reconstruct_call(sae: str, activations: np.ndarray) -> Call[tuple[np.ndarray, np.ndarray]]:
    def parse(r: sae_pb2.ReconstructResponse) -> tuple[np.ndarray, np.ndarray]:
        return tensor_to_numpy(r.reconstruction, "reconstruction"), finite_floats(r.squared_error, "squared_error")

    return Call(
        SERVICE, "Reconstruct", sae_pb2.ReconstructRequest(sae=check.text(sae, "sae"), activations=_activations(activations)), parse
    )


def _top_activations_call(sae: str, latent: int, k: int | None) -> Call[list[ActivatingContext]]:
    request = sae_pb2.TopActivationsRequest(
        sae=check.text(sae, "sae"), latent=check.integer(latent, "latent"), k=check.optional_integer(k, "k")
    )
    return Call(SERVICE, "TopActivations", request, lambda r: [_context(c) for c in r.contexts])


def _decompose_latent_call(
    sae: str, latent: int, top_n: int | None, members: int | None, contexts: int | None
) -> Call[LatentDecomposition]:
    def parse(r: sae_pb2.LatentDecomposition) -> LatentDecomposition:
        metas = [(_meta(m.meta_latent), m.activation) for m in r.meta_latents]
        return LatentDecomposition(r.sae, r.latent, _explanation(r.explanation), metas, r.reconstruction_cosine)

    request = sae_pb2.DecomposeLatentRequest(
        sae=check.text(sae, "sae"),
        latent=check.integer(latent, "latent"),
        top_n=check.optional_integer(top_n, "top_n"),
        members=check.optional_integer(members, "members"),
        contexts=check.optional_integer(contexts, "contexts"),
    )
    return Call(SERVICE, "DecomposeLatent", request, parse)


def _get_meta_latent_call(sae: str, meta_latent: int, members: int | None, contexts: int | None) -> Call[MetaLatent]:
    request = sae_pb2.GetMetaLatentRequest(
        sae=check.text(sae, "sae"),
        meta_latent=check.integer(meta_latent, "meta_latent"),
        members=check.optional_integer(members, "members"),
        contexts=check.optional_integer(contexts, "contexts"),
    )
    return Call(SERVICE, "GetMetaLatent", request, _meta)


def _compare_saes_call(small: str, large: str, threshold: float | None) -> Call[SaeComparison]:
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
            swap_mse=finite_floats(r.swap_mse, "swap_mse"),
            swap_threshold=r.swap_threshold,
            max_cosine=tensor_to_numpy(r.max_cosine, "max_cosine"),
            nearest=tensor_to_numpy(r.nearest, "nearest"),
            delta_mse=tensor_to_numpy(r.delta_mse, "delta_mse"),
            latents_that_help=r.latents_that_help,
            evaluation_tokens=r.evaluation_tokens,
        )

    request = sae_pb2.CompareSaesRequest(
        small=check.text(small, "small"),
        large=check.text(large, "large"),
        threshold=None if threshold is None else check.number(threshold, "threshold"),
    )
    return Call(SERVICE, "CompareSaes", request, parse)


# -- methods ------------------------------------------------------------------------------------


class SaeMethods(SyncTransport):
    """The SAE analysis methods of `sdk.Client`."""

    _service = SERVICE

    def list_saes(self, *, timeout_s: float | None = None) -> list[SaeInfo]:
        """Every SAE the service holds.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The SAEs by family, smallest first: id, base model, layer, width, architecture,
            metrics and meta-SAE facts.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> [(s.id, s.width, round(s.metrics["fvu"], 3)) for s in client.list_saes()]
        """
        return self._run(_list_saes_call(), timeout_s)

    def get_sae(self, sae: str, *, timeout_s: float | None = None) -> SaeInfo:
        """One SAE by id.

        Args:
            sae: an id from `list_saes()`.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Its description, as in `list_saes()`.
        Raises:
            InvalidArgument: an empty id.
            NotFound: the service holds no SAE of that id; the message lists those it holds.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_get_sae_call(sae), timeout_s)

    def encode_text(
        self,
        sae: str,
        text: str,
        *,
        top_k: int | None = None,
        allow_special_tokens: bool = False,
        timeout_s: float | None = None,
    ) -> list[TokenLatents]:
        """Run a text through the LM up to the SAE's layer and encode every token with the SAE.

        Args:
            sae: an id from `list_saes()`.
            text: at most the service's `sae.max_text_chars` characters and `sae.max_text_tokens`
                tokens (config keys), not blank.
            top_k: latents reported per token, 1 to the service's `sae.max_top_k` and at most the
                SAE's width; None takes 8.
            allow_special_tokens: let special-token strings in the text (e.g. "<|endoftext|>")
                become special tokens; by default the text is plain text and they are split
                like any other characters. Special tokens are never encoded (marked excluded).
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            One TokenLatents per token in order, position 0 included (marked excluded); their
            spans (start, end; code points) tile `text`.
        Raises:
            InvalidArgument: a blank or too long text, top_k out of range.
            NotFound: no SAE of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> for token in client.encode_text(sae, "Albert Einstein was born in Ulm."):
            ...     print(token)
        """
        return self._run(_encode_text_call(sae, text, top_k, allow_special_tokens), timeout_s)

    def encode_activations(
        self, sae: str, activations: np.ndarray, *, top_k: int | None = None, timeout_s: float | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Encode residual-stream activations you already have.

        Args:
            sae: an id from `list_saes()`.
            activations: float array [n, d_in] (sent as float32), 1 <= n <= the service's
                `sae.max_rows`, entries within ±`sae.max_abs_activation` (1e6 by default).
            top_k: None for dense latents; else the latents kept per row, 1 to the service's
                `sae.max_top_k` and the SAE's width.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            With top_k None, the latents: float32 [n, width]. Else (indices int32 [n, top_k],
            values float32 [n, top_k]), strongest first per row.
        Raises:
            InvalidArgument: activations not a 2-D float array (before sending); a d_in other
                than the SAE's, too many rows, NaN or inf, an entry beyond
                `sae.max_abs_activation`, top_k out of range (0 included).
            NotFound: no SAE of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.
        """
        return self._run(_encode_activations_call(sae, activations, top_k), timeout_s)

    def reconstruct(
        self, sae: str, activations: np.ndarray, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode and decode residual-stream activations.

        Args:
            sae: an id from `list_saes()`.
            activations: float array [n, d_in] (sent as float32), 1 <= n <= the service's
                `sae.max_rows`, entries within ±`sae.max_abs_activation` (1e6 by default).
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            (reconstruction float32 [n, d_in], squared error float32 [n]: per row, summed over
            the d_in dimensions); both finite.
        Raises:
            InvalidArgument: activations not a 2-D float array (before sending); a d_in other
                than the SAE's, too many rows, NaN or inf, an entry beyond `sae.max_abs_activation`.
            InternalError: the model produced a non-finite value (a server fault, with its request id).
            NotFound: no SAE of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.
        """
        return self._run(_reconstruct_call(sae, activations), timeout_s)

    def top_activations(
        self, sae: str, latent: int, *, k: int | None = None, timeout_s: float | None = None
    ) -> list[ActivatingContext]:
        """The corpus contexts where a latent fires most strongly, stored at build time.

        Args:
            sae: an id from `list_saes()`.
            latent: 0 to the SAE's width - 1.
            k: contexts, 1 to the SAE's `top_activations_stored`; None takes 10.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Up to k contexts, strongest first, the firing token marked (print one to see it in [[ ]]).
        Raises:
            InvalidArgument: latent or k out of range.
            NotFound: no SAE of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> for context in client.top_activations(sae, 1234, k=5):
            ...     print(context)        # activation, then the text with the token in [[ ]]
        """
        return self._run(_top_activations_call(sae, latent, k), timeout_s)

    def decompose_latent(
        self,
        sae: str,
        latent: int,
        *,
        top_n: int | None = None,
        members: int | None = None,
        contexts: int | None = None,
        timeout_s: float | None = None,
    ) -> LatentDecomposition:
        """A latent's meta-latents: its decoder direction encoded by the meta-SAE trained on the
        SAE's decoder (Leask et al., 2025, Section 4), with explanations and the other latents
        that share each meta-latent.

        Args:
            sae: an id from `list_saes()` whose `meta_width` is not 0.
            latent: 0 to the SAE's width - 1.
            top_n: meta-latents returned at most, 1 to the service's `sae.max_top_n`; None: 4.
            members: other latents listed per meta-latent, 1 to the service's `sae.max_members`;
                None: 8.
            contexts: contexts per explanation, 1 to the SAE's `top_activations_stored`; None: 3.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The latent's explanation, its active meta-latents (strongest first, with
            activations) and the cosine of the meta-SAE's reconstruction.
        Raises:
            InvalidArgument: latent, top_n, members or contexts out of range.
            NotFound: no SAE of that id.
            FailedPrecondition: no meta-SAE was trained on this SAE.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> print(client.decompose_latent(sae, 1234, top_n=4))
        """
        return self._run(_decompose_latent_call(sae, latent, top_n, members, contexts), timeout_s)

    def get_meta_latent(
        self,
        sae: str,
        meta_latent: int,
        *,
        members: int | None = None,
        contexts: int | None = None,
        timeout_s: float | None = None,
    ) -> MetaLatent:
        """One meta-latent of an SAE's meta-SAE (Leask et al., 2025, Section 4).

        Args:
            sae: an id from `list_saes()` whose `meta_width` is not 0.
            meta_latent: 0 to the SAE's `meta_width` - 1.
            members: latents listed that use it, 1 to the service's `sae.max_members`; None: 8.
            contexts: contexts in its explanation, 1 to those stored; None: 3.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The latents that use it (strongest first) and its explanation.
        Raises:
            InvalidArgument: meta_latent, members or contexts out of range.
            NotFound: no SAE of that id.
            FailedPrecondition: no meta-SAE was trained on this SAE.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_get_meta_latent_call(sae, meta_latent, members, contexts), timeout_s)

    def compare_saes(
        self, small: str, large: str, *, threshold: float | None = None, timeout_s: float | None = None
    ) -> SaeComparison:
        """SAE stitching (Leask et al., 2025, Section 3): the larger SAE's novel latents (max
        decoder cosine to the smaller SAE below `threshold`) and reconstruction latents, the
        ΔMSE of inserting each into the smaller SAE, and the MSE-vs-swaps curve.

        Args:
            small: id of the narrower SAE.
            large: id of the wider SAE, of the same LM, layer and family, compared at build time.
            threshold: in (0, 1); None takes the service's `sae.default_threshold`. The novel
                shares are those stored, at fixed thresholds.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The comparison; print it for a summary.
        Raises:
            InvalidArgument: threshold outside (0, 1); small not narrower than large.
            NotFound: no SAE of either id, or no stitching of the two was stored.
            FailedPrecondition: SAEs of different LMs, layers, hook points or input widths.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> print(client.compare_saes(small_id, large_id))
        """
        return self._run(_compare_saes_call(small, large, threshold), timeout_s)


@docstrings_from(SaeMethods)
class AsyncSaeMethods(AsyncTransport):
    """The SAE analysis methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def list_saes(self, *, timeout_s: float | None = None) -> list[SaeInfo]:
        return await self._run(_list_saes_call(), timeout_s)

    async def get_sae(self, sae: str, *, timeout_s: float | None = None) -> SaeInfo:
        return await self._run(_get_sae_call(sae), timeout_s)

    async def encode_text(
        self,
        sae: str,
        text: str,
        *,
        top_k: int | None = None,
        allow_special_tokens: bool = False,
        timeout_s: float | None = None,
    ) -> list[TokenLatents]:
        return await self._run(_encode_text_call(sae, text, top_k, allow_special_tokens), timeout_s)

    async def encode_activations(
        self, sae: str, activations: np.ndarray, *, top_k: int | None = None, timeout_s: float | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        return await self._run(_encode_activations_call(sae, activations, top_k), timeout_s)

    async def reconstruct(
        self, sae: str, activations: np.ndarray, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return await self._run(_reconstruct_call(sae, activations), timeout_s)

    async def top_activations(
        self, sae: str, latent: int, *, k: int | None = None, timeout_s: float | None = None
    ) -> list[ActivatingContext]:
        return await self._run(_top_activations_call(sae, latent, k), timeout_s)

    async def decompose_latent(
        self,
        sae: str,
        latent: int,
        *,
        top_n: int | None = None,
        members: int | None = None,
        contexts: int | None = None,
        timeout_s: float | None = None,
    ) -> LatentDecomposition:
        return await self._run(_decompose_latent_call(sae, latent, top_n, members, contexts), timeout_s)

    async def get_meta_latent(
        self,
        sae: str,
        meta_latent: int,
        *,
        members: int | None = None,
        contexts: int | None = None,
        timeout_s: float | None = None,
    ) -> MetaLatent:
        return await self._run(_get_meta_latent_call(sae, meta_latent, members, contexts), timeout_s)

    async def compare_saes(
        self, small: str, large: str, *, threshold: float | None = None, timeout_s: float | None = None
    ) -> SaeComparison:
        return await self._run(_compare_saes_call(small, large, threshold), timeout_s)
