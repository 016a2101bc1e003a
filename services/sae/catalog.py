"""What the SAE service knows about its SAEs, read from the model repository at start-up:
metadata, decoder rows (SAELens-format weights), and the analyses stored at build time
(top-activating contexts, output-token explanations, meta-SAE codes, stitching results).

Everything here is plain numpy; model execution goes through the backend in the servicer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from services.model_repository import Key, ModelRepository, ModelVersion
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from services.sae.tokenization import SaeTokenizer, StoredWindows, TokenizedText

TOP_PREFIX = "top_"  # keys of the stored top-activation windows (training.sae.analysis.TOP_PREFIX)


class Kind:
    """Model kinds of an SAE family in the model repository (`facet.json` "kind")."""

    LM_RESIDUAL = "lm-residual"  # the LM's prefix up to the SAE's layer: token ids -> residual stream
    SAE = "sae"  # an SAE's encoder: residual stream -> latents
    SAE_DECODER = "sae-decoder"  # latents -> reconstruction
    META_SAE = "meta-sae"  # the meta-SAE's encoder on the SAE's decoder rows


class Prop:
    """Property keys (`facet.json` "properties") the SAE build writes and this service reads."""

    SAE = "sae"  # decoder and meta-SAE: the SAE they belong to
    LM_MODEL = "lm_model"  # the LM_RESIDUAL model an SAE reads from
    DECODER_MODEL = "decoder_model"
    META_MODEL = "meta_model"
    BASE_MODEL = "base_model"
    LAYER = "layer"
    HOOK = "hook"
    D_IN = "d_in"
    D_MODEL = "d_model"
    VOCAB_SIZE = "vocab_size"
    WIDTH = "width"
    ARCHITECTURE = "architecture"
    K = "k"
    FAMILY = "family"
    CORPUS = "corpus"
    TRAINING_TOKENS = "training_tokens"
    METRICS = "metrics"
    TOP_ACTIVATIONS_STORED = "top_activations_stored"
    META_WIDTH = "meta_width"
    META_VARIANCE_EXPLAINED = "meta_variance_explained"
    META_MEAN_ACTIVE = "meta_mean_active"


class File:
    """Keys of the files stored beside an SAE family's models (`facet.json` "files")."""

    TOKENIZER = "tokenizer"  # LM_RESIDUAL: tokenizer.json
    WEIGHTS = "weights"  # SAE: SAELens-format safetensors
    SAELENS_CONFIG = "saelens_cfg"
    ANALYSIS = "analysis"  # SAE and META_SAE: top activations, output tokens (and the meta-SAE's codes)
    STITCHING = "stitching:"  # + the smaller SAE's name: a stitching result
    SWAP_CURVE = "swap_curve:"  # + the smaller SAE's name: its plot


# An analysis file (File.ANALYSIS) written since token spans were stored has this array.
ANALYSIS_FORMAT_KEY = "top_highlight"


def analysis_is_current(path: Path) -> bool:
    """Whether the analysis file at `path` has the current format (token spans); cheap: an
    .npz's member list is read, not its arrays."""
    with np.load(path) as arrays:
        return ANALYSIS_FORMAT_KEY in arrays.files


@dataclasses.dataclass(frozen=True)
class Context:
    tokens: TokenizedText  # the window: its text and each token's span in it
    highlight: int  # index of the firing token
    activation: float


@dataclasses.dataclass(frozen=True)
class OutputToken:
    token: str  # display string, never U+FFFD: bytes of a partial character as \\xNN escapes
    score: float
    partial: bool
    special: bool


@dataclasses.dataclass(frozen=True)
class Explanation:
    contexts: list[Context]
    output_tokens: list[OutputToken]


class Explained:
    """Stored top activations and output tokens of a set of units (latents or meta-latents)."""

    def __init__(self, arrays: Any, tokens: SaeTokenizer) -> None:
        if ANALYSIS_FORMAT_KEY not in arrays:
            raise FailedPrecondition(
                f"an SAE analysis file predates token spans (no {ANALYSIS_FORMAT_KEY}); rebuild the SAEs: "
                "`facet models build` rebuilds the default family, `facet sae build` any other"
            )
        self.top_values = np.asarray(arrays["top_values"])  # [units, k]
        self.top_highlight = np.asarray(arrays["top_highlight"])  # [units, k]
        self.windows = StoredWindows(arrays, TOP_PREFIX)  # [units, k] windows
        self.firing_rate = np.asarray(arrays["firing_rate"])  # [units]
        self.output_ids = np.asarray(arrays["output_ids"])  # [units, n]
        self.output_scores = np.asarray(arrays["output_scores"])
        self._tokens = tokens

    @property
    def stored(self) -> int:
        return int(self.top_values.shape[1])

    def contexts(self, unit: int, k: int) -> list[Context]:
        out = []
        for j, value in enumerate(self.top_values[unit, :k].tolist()):
            if value <= 0:
                break
            out.append(Context(self.windows.get(unit, j), int(self.top_highlight[unit, j]), float(value)))
        return out

    def explanation(self, unit: int, contexts: int) -> Explanation:
        outputs = []
        for token_id, score in zip(self.output_ids[unit].tolist(), self.output_scores[unit].tolist(), strict=True):
            display, partial = self._tokens.vocabulary_piece(token_id)
            outputs.append(OutputToken(display, score, partial, token_id in self._tokens.special_ids))
        return Explanation(self.contexts(unit, contexts), outputs)


@dataclasses.dataclass
class MetaSae:
    name: str
    entry: ModelVersion
    codes: np.ndarray  # [d_sae, d_meta]: meta-latent activations of every latent's unit decoder row
    decoder: np.ndarray  # [d_meta, d_in]
    bias: np.ndarray  # [d_in]
    explained: Explained

    @property
    def width(self) -> int:
        return int(self.decoder.shape[0])

    def members(self, meta_latent: int, limit: int, exclude: int = -1) -> tuple[list[int], list[float], int]:
        column = self.codes[:, meta_latent]
        users = np.flatnonzero(column > 0)
        order = users[np.argsort(-column[users], kind="stable")]
        order = order[order != exclude]
        return order[:limit].tolist(), column[order[:limit]].tolist(), int(len(order))


@dataclasses.dataclass
class Stitching:
    small: str
    arrays: dict[str, np.ndarray]


@dataclasses.dataclass
class SaeEntry:
    name: str
    entry: ModelVersion
    unit_decoder: np.ndarray  # [d_sae, d_in]
    explained: Explained
    stitchings: dict[str, Path]  # smaller SAE name -> stored result
    meta: MetaSae | None = None

    @property
    def props(self) -> dict[str, Any]:
        return self.entry.properties

    @property
    def width(self) -> int:
        return int(self.props[Prop.WIDTH])

    @property
    def d_in(self) -> int:
        return int(self.props[Prop.D_IN])

    def stitching(self, small: str) -> dict[str, np.ndarray]:
        path = self.stitchings.get(small)
        if path is None:
            raise NotFound(
                f"no stitching result for '{small}' -> '{self.name}' is stored; SAEs trained together by "
                "`facet models build` are compared at build time"
            )
        with np.load(path) as data:
            return {k: data[k] for k in data.files}


class Catalog:
    """Every SAE in the repository, its meta-SAE and the LM prefix models they read from."""

    def __init__(self, repository: ModelRepository) -> None:
        self.saes: dict[str, SaeEntry] = {}
        self.lm_models: dict[str, ModelVersion] = {}
        self.tokens: dict[str, SaeTokenizer] = {}
        entries = [repository.get(name) for name in repository.models()]
        for entry in entries:
            if entry.kind == Kind.LM_RESIDUAL:
                self.lm_models[entry.name] = entry
                self.tokens[entry.name] = SaeTokenizer.from_file(entry.file(File.TOKENIZER))
        metas = {e.properties[Prop.SAE]: e for e in entries if e.kind == Kind.META_SAE}
        for entry in entries:
            if entry.kind != Kind.SAE:
                continue
            lm = entry.properties[Prop.LM_MODEL]
            if lm not in self.tokens:
                raise FailedPrecondition(f"SAE '{entry.name}' reads from LM model '{lm}', which the repository lacks")
            self.saes[entry.name] = self._load_sae(entry, self.tokens[lm], metas.get(entry.name))

    @staticmethod
    def _load_sae(entry: ModelVersion, tokens: SaeTokenizer, meta_entry: ModelVersion | None) -> SaeEntry:
        from safetensors.numpy import load_file

        w_dec = load_file(str(entry.file(File.WEIGHTS)))["W_dec"]
        unit = w_dec / np.maximum(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-12)
        with np.load(entry.file(File.ANALYSIS)) as arrays:
            explained = Explained({k: arrays[k] for k in arrays.files}, tokens)
        stitchings = {
            key.removeprefix(File.STITCHING): entry.path / file for key, file in entry.metadata.get(Key.FILES, {}).items() if key.startswith(File.STITCHING)
        }
        sae = SaeEntry(entry.name, entry, unit.astype(np.float32), explained, stitchings)
        if meta_entry is not None:
            with np.load(meta_entry.file(File.ANALYSIS)) as arrays:
                data = {k: arrays[k] for k in arrays.files}
            sae.meta = MetaSae(meta_entry.name, meta_entry, data["codes"], data["meta_decoder"], data["meta_bias"], Explained(data, tokens))
        return sae

    def get(self, name: str) -> SaeEntry:
        if not name:
            raise InvalidArgument("sae is empty; name one of ListSaes' ids")
        sae = self.saes.get(name)
        if sae is None:
            known = ", ".join(sorted(self.saes)) or "none"
            raise NotFound(f"SAE '{shown(name)}' is not served (have: {known})")
        return sae

    def sorted(self) -> list[SaeEntry]:
        return sorted(self.saes.values(), key=lambda s: (s.props.get(Prop.FAMILY, ""), s.width))


def compatible(small: SaeEntry, large: SaeEntry) -> None:
    """Stitching needs two SAEs of one LM and layer; raise FailedPrecondition otherwise."""
    a, b = small.props, large.props
    for key, what in ((Prop.BASE_MODEL, "base models"), (Prop.LAYER, "layers"), (Prop.HOOK, "hook points"), (Prop.D_IN, "input widths")):
        if a.get(key) != b.get(key):
            raise FailedPrecondition(
                f"SAEs '{small.name}' and '{large.name}' read different {what} ({a.get(key)} vs {b.get(key)}); "
                "stitching compares SAEs of the same LM and layer"
            )
    if small.width >= large.width:
        raise InvalidArgument(f"small ('{small.name}', {small.width} latents) must be narrower than large ('{large.name}', {large.width})")
