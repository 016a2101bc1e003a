"""The paraphrase service end to end: a real server process on every backend, a real (tiny)
DDL+VSAR paraphraser trained by the project's own code on Quora pairs, the SDK."""

from __future__ import annotations

import asyncio
import itertools
import re
import string
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import sdk
from sdk._proto.facet.v1 import paraphrase_pb2
from services.model_repository import ModelRepository
from services.paraphrase.catalog import File, Prop
from services.paraphrase.config import ParaphraseConfig
from tests.services.paraphrase.fixtures import PARAPHRASER, SECOND_PARAPHRASER

pytestmark = pytest.mark.integration

# Short Quora-style questions (the tiny model is trained on a few hundred Quora duplicate-question
# pairs; its vocabulary is their WordPiece pieces plus every single character, so rarer words take
# several tokens: these stay well under its 20 tokens).
SOURCE = "How can I improve my English?"
SOURCES = [SOURCE, "What is the best way to learn?", "Why do people ask questions on Quora?"]
LIMITS = ParaphraseConfig()


@pytest.fixture(scope="module")
def client(paraphrase_server) -> Iterator[sdk.Client]:  # type: ignore[no-untyped-def]
    with sdk.Client(paraphrase=paraphrase_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def info(client: sdk.Client) -> sdk.ParaphraserInfo:
    return next(p for p in client.list_paraphrasers() if p.name == PARAPHRASER)


def _plain(text: str) -> str:
    """Lowercase, punctuation dropped, whitespace collapsed: what "the same sentence" means here."""
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def _text(repository: ModelRepository, ids: list[int]) -> str:
    """The text of token ids as the paper's code decodes them: transformers' decode of the
    paraphraser's tokenizer with its clean-up of spaces ("what's the best way?")."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(repository.get(PARAPHRASER).file(File.TOKENIZER)))
    return str(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))


def _bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference], lowercase=True).score)


# -- behaviour ---------------------------------------------------------------------------------


def test_greedy_is_the_pytorch_models_greedy_decoding(client: sdk.Client, paraphrase_repository: ModelRepository, info: sdk.ParaphraserInfo) -> None:
    """The service's step-by-step decoding over the backend (encoder once, decoder steps with the
    KV cache) yields the tokens that the PyTorch checkpoint the ONNX graphs came from decodes
    greedily (training.paraphrase.generate.greedy, the reference search)."""
    from training.paraphrase.export import load_pytorch_model
    from training.paraphrase.generate import encode_sources, greedy

    model, tokenizer = load_pytorch_model(paraphrase_repository.get(PARAPHRASER))
    expected = greedy(model, encode_sources(tokenizer, SOURCES, info.max_length), info.max_length)
    for source, ids in zip(SOURCES, expected, strict=True):
        streamed = [t.token_id for t in client.paraphrase_stream(source)]
        assert streamed == ids, source
        _assert_greedy(client.paraphrase(source, strategy="greedy"), source, _text(paraphrase_repository, ids), len(ids))


def _assert_greedy(out: sdk.ParaphraseResult, source: str, text: str, tokens: int) -> None:
    """The one greedy hypothesis is returned, unless it is the source again (then dropped and counted)."""
    assert out.considered == 1
    if _plain(text) == _plain(source):
        assert len(out) == 0 and out.dropped_same_as_source == 1
    else:
        [unary] = out
        assert unary.text == text and unary.tokens == tokens


def test_n_paraphrases_with_their_scores(client: sdk.Client) -> None:
    out = client.paraphrase(SOURCE, n=3, strategy="beam", beam_width=6)
    assert isinstance(out, sdk.ParaphraseResult) and out.model == PARAPHRASER and not out.truncated
    assert 1 <= len(out) <= 3 and out.considered >= len(out)
    assert out.considered == len(out) + out.dropped_same_as_source + out.dropped_duplicate + out.dropped_too_similar
    logprobs = [p.logprob for p in out]
    assert logprobs == sorted(logprobs, reverse=True) and all(lp < 0 for lp in logprobs)  # order_by="logprob"
    for p in out:
        assert p.text.strip() and _plain(p.text) != _plain(SOURCE)
        assert -1.0 <= p.similarity <= 1.0
        assert p.source_bleu == pytest.approx(_bleu(p.text, SOURCE), abs=1e-6)
        assert 1 <= p.tokens <= 20


def test_similarity_is_the_cosine_of_minilm_embeddings(client: sdk.Client) -> None:
    """similarity = cosine of all-MiniLM-L6-v2 sentence embeddings (sentence-transformers on the
    packaged weights the repository's embedding model was exported from)."""
    from sentence_transformers import SentenceTransformer

    from training.retrieval.export import packaged_minilm_dir

    out = client.paraphrase(SOURCE, n=3, strategy="diverse_beam")
    encoder = SentenceTransformer(str(packaged_minilm_dir()), device="cpu")
    vectors = encoder.encode([SOURCE, *(p.text for p in out)], normalize_embeddings=True)
    for p, v in zip(out, vectors[1:], strict=True):
        assert p.similarity == pytest.approx(float(v @ vectors[0]), abs=1e-4)


@pytest.mark.parametrize("cap", [100.0, 40.0, 0.0])
def test_no_two_paraphrases_above_the_pairwise_bleu_cap(client: sdk.Client, cap: float) -> None:
    out = client.paraphrase(SOURCE, n=LIMITS.max_n, strategy="diverse_beam", beam_width=LIMITS.max_beam_width, max_pairwise_bleu=cap)
    assert 1 <= len(out) <= LIMITS.max_n
    for a, b in itertools.combinations([p.text for p in out], 2):
        assert max(_bleu(a, b), _bleu(b, a)) <= cap + 1e-9
        assert _plain(a) != _plain(b)


def test_default_cap_is_the_config_key(client: sdk.Client) -> None:
    default = client.paraphrase(SOURCE, n=5, strategy="diverse_beam", beam_width=8)
    explicit = client.paraphrase(SOURCE, n=5, strategy="diverse_beam", beam_width=8, max_pairwise_bleu=LIMITS.max_pairwise_bleu)
    assert [p.text for p in default] == [p.text for p in explicit]


@pytest.mark.parametrize("by", ["logprob", "similarity", "source_bleu"])
def test_order_by(client: sdk.Client, by: str) -> None:
    out = client.paraphrase(SOURCE, n=4, strategy="diverse_beam", beam_width=8, order_by=by)
    values = [getattr(p, by) for p in out]
    assert values == sorted(values, reverse=by != "source_bleu")  # source_bleu ascending: least copied first
    same = client.paraphrase(SOURCE, n=4, strategy="diverse_beam", beam_width=8)
    assert sorted(p.text for p in out) == sorted(p.text for p in same)  # ordering does not change the selection


def test_n_obeys_the_caps(client: sdk.Client) -> None:
    assert len(client.paraphrase(SOURCE)) == 1  # n defaults to 1 (beam search)
    assert len(client.paraphrase(SOURCE, n=LIMITS.max_n, strategy="beam", beam_width=LIMITS.max_beam_width)) <= LIMITS.max_n
    sampled = client.paraphrase(SOURCE, n=4, strategy="sample", seed=7)
    assert 1 <= len(sampled) <= 4


def test_sampling_is_reproducible_with_a_seed(client: sdk.Client) -> None:
    first = client.paraphrase(SOURCE, n=3, strategy="sample", temperature=1.5, top_p=0.95, top_k=50, seed=11)
    again = client.paraphrase(SOURCE, n=3, strategy="sample", temperature=1.5, top_p=0.95, top_k=50, seed=11)
    assert [(p.text, p.logprob) for p in first] == [(p.text, p.logprob) for p in again]
    streamed = [t.token_id for t in client.paraphrase_stream(SOURCE, strategy="sample", seed=3)]
    assert streamed == [t.token_id for t in client.paraphrase_stream(SOURCE, strategy="sample", seed=3)]


def test_stream_yields_the_greedy_paraphrase_token_by_token(client: sdk.Client, paraphrase_repository: ModelRepository) -> None:
    tokens = list(client.paraphrase_stream(SOURCE))
    assert [t.index for t in tokens] == list(range(len(tokens))) and tokens
    assert all(t.model == PARAPHRASER and not t.truncated and t.logprob <= 0 for t in tokens)
    ids = [t.token_id for t in tokens]
    # joined, the tokens' texts are the paraphrase as Paraphrase (and the paper's decode) spell it
    joined = "".join(t.text for t in tokens)
    assert joined == _text(paraphrase_repository, ids)
    _assert_greedy(client.paraphrase(SOURCE, strategy="greedy"), SOURCE, joined, len(ids))
    for sentence in ("What's the best way?", "Why don't cats purr?"):  # contractions and punctuation
        sampled = list(client.paraphrase_stream(sentence, strategy="sample", seed=5, temperature=2.0))
        assert "".join(t.text for t in sampled) == _text(paraphrase_repository, [t.token_id for t in sampled])
    short = list(client.paraphrase_stream(SOURCE, max_length=2))
    assert [t.token_id for t in short] == ids[:2]


def test_truncate_cuts_a_long_text_and_says_so(client: sdk.Client, info: sdk.ParaphraserInfo) -> None:
    long_text = " ".join(["what"] * (info.max_length + 5))  # one token per word
    with pytest.raises(sdk.InvalidArgument, match=rf"text has {info.max_length + 5} tokens.*at most {info.max_length}.*truncate=True"):
        client.paraphrase(long_text)
    out = client.paraphrase(long_text, truncate=True, strategy="greedy")
    assert out.truncated and out.considered == 1
    assert all(t.truncated for t in client.paraphrase_stream(long_text, truncate=True))
    assert not client.paraphrase(SOURCE, truncate=True).truncated


def test_paraphrasers_are_listed_and_served_by_name(client: sdk.Client, paraphrase_repository: ModelRepository) -> None:
    listed = client.list_paraphrasers()
    assert [p.name for p in listed] == [PARAPHRASER, SECOND_PARAPHRASER]
    assert [p.default for p in listed] == [True, False]
    first = listed[0]
    entry = paraphrase_repository.get(PARAPHRASER)
    props = entry.properties
    assert first.version == entry.version and first.max_length == props[Prop.MAX_LENGTH]
    assert first.setting == props[Prop.SETTING] and listed[1].setting == "ddl"
    assert first.training_data == props[Prop.TRAINING_DATA] and first.metrics == props.get(Prop.METRICS, {})
    assert first.architecture == props[Prop.ARCHITECTURE] and first.encoder == props[Prop.ENCODER_MODEL]
    ours = client.paraphrase(SOURCE, n=2)
    theirs = client.paraphrase(SOURCE, n=2, model=SECOND_PARAPHRASER)
    assert theirs.model == SECOND_PARAPHRASER
    assert [(p.text, round(p.logprob, 4)) for p in theirs] == [(p.text, round(p.logprob, 4)) for p in ours]  # the same weights


async def test_async_client_does_the_same(paraphrase_server) -> None:  # type: ignore[no-untyped-def]
    async with sdk.AsyncClient(paraphrase=paraphrase_server.address) as client:
        out, listed = await asyncio.gather(client.paraphrase(SOURCE, n=2), client.list_paraphrasers())
        assert 1 <= len(out) <= 2 and listed[0].name == PARAPHRASER
        tokens = [t async for t in client.paraphrase_stream(SOURCE)]
        assert tokens and tokens[0].index == 0
        with pytest.raises(sdk.NotFound):
            await client.paraphrase(SOURCE, model="no-such-paraphraser")


# -- runtime -----------------------------------------------------------------------------------


def test_health_reflection_and_metrics(paraphrase_server, client: sdk.Client) -> None:  # type: ignore[no-untyped-def]
    client.paraphrase(SOURCE)
    list(client.paraphrase_stream(SOURCE))
    with grpc.insecure_channel(paraphrase_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "facet.v1.Paraphrase"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
        assert "facet.v1.Paraphrase" in ProtoReflectionDescriptorDatabase(channel).get_services()
    text = urllib.request.urlopen(f"http://127.0.0.1:{paraphrase_server.metrics_port}/metrics").read().decode()
    assert 'facet_requests_total{code="OK",method="/facet.v1.Paraphrase/Paraphrase"}' in text
    assert 'facet_requests_total{code="OK",method="/facet.v1.Paraphrase/ParaphraseStream"}' in text
    steps = re.search(rf'^facet_paraphrase_decoder_steps_total\{{model="{PARAPHRASER}"\}} (\S+)$', text, flags=re.MULTILINE)
    assert steps and float(steps.group(1)) >= 2


# -- bad input: every RPC, the right status, a message that says what to fix ---------------------

_BAD_CALLS = [
    ("empty text", lambda c: c.paraphrase(""), sdk.InvalidArgument, "text is blank"),
    ("blank text", lambda c: c.paraphrase(" \u200b\t\n"), sdk.InvalidArgument, "text is blank"),
    ("text too long", lambda c: c.paraphrase("q" * 1001), sdk.InvalidArgument, "paraphrase.max_text_chars (1000)"),
    ("too many tokens", lambda c: c.paraphrase("word " * 40), sdk.InvalidArgument, "tokens; paraphraser 'ddl-vsar-quora' reads at most"),
    ("n zero", lambda c: c.paraphrase(SOURCE, n=0), sdk.InvalidArgument, "n must be between 1 and paraphrase.max_n (10), got 0"),
    ("n negative", lambda c: c.paraphrase(SOURCE, n=-2), sdk.InvalidArgument, "n must be between 1 and paraphrase.max_n (10), got -2"),
    ("n above max_n", lambda c: c.paraphrase(SOURCE, n=11), sdk.InvalidArgument, "paraphrase.max_n (10), got 11"),
    ("n above beam width", lambda c: c.paraphrase(SOURCE, n=5, beam_width=3), sdk.InvalidArgument, "n (5) must be <= beam_width (3)"),
    ("n above diverse beam width", lambda c: c.paraphrase(SOURCE, n=5, strategy="diverse_beam", beam_width=4), sdk.InvalidArgument, "n (5) must be <= beam_width (4)"),
    ("beam width too large", lambda c: c.paraphrase(SOURCE, beam_width=17), sdk.InvalidArgument, "paraphrase.max_beam_width (16)"),
    ("greedy n > 1", lambda c: c.paraphrase(SOURCE, n=2, strategy="greedy"), sdk.InvalidArgument, "n must be 1 for strategy 'greedy'"),
    ("groups do not divide", lambda c: c.paraphrase(SOURCE, strategy="diverse_beam", beam_width=6, beam_groups=4), sdk.InvalidArgument, "beam_groups (4) must divide beam_width (6)"),
    ("temperature zero", lambda c: c.paraphrase(SOURCE, strategy="sample", temperature=0.0), sdk.InvalidArgument, "temperature must be > 0, got 0.0"),
    ("temperature negative", lambda c: c.paraphrase_stream(SOURCE, strategy="sample", temperature=-1.0), sdk.InvalidArgument, "temperature must be > 0"),
    ("top_p zero", lambda c: c.paraphrase(SOURCE, strategy="sample", top_p=0.0), sdk.InvalidArgument, "top_p must be in (0, 1], got 0.0"),
    ("top_p above 1", lambda c: c.paraphrase(SOURCE, strategy="sample", top_p=1.5), sdk.InvalidArgument, "top_p must be in (0, 1], got 1.5"),
    ("top_k negative", lambda c: c.paraphrase(SOURCE, strategy="sample", top_k=-1), sdk.InvalidArgument, "top_k must be >= 0"),
    ("unknown strategy", lambda c: c.paraphrase(SOURCE, strategy="nucleus"), sdk.InvalidArgument, "strategy must be one of greedy, beam, diverse_beam, sample; got 'nucleus'"),
    ("unknown order_by", lambda c: c.paraphrase(SOURCE, order_by="length"), sdk.InvalidArgument, "order_by must be one of logprob, similarity, source_bleu; got 'length'"),
    ("cap above 100", lambda c: c.paraphrase(SOURCE, max_pairwise_bleu=101.0), sdk.InvalidArgument, "max_pairwise_bleu must be in [0, 100]"),
    ("max_length zero", lambda c: c.paraphrase(SOURCE, max_length=0), sdk.InvalidArgument, "max_length must be between 1 and"),
    ("negative seed", lambda c: c.paraphrase(SOURCE, strategy="sample", seed=-1), sdk.InvalidArgument, "seed must be >= 0"),
    ("unknown model", lambda c: c.paraphrase(SOURCE, model="no-such-paraphraser"), sdk.NotFound, f"available: {PARAPHRASER}, {SECOND_PARAPHRASER}"),
    ("only unknown words", lambda c: c.paraphrase("\U0001f600\U0001f389\U0001f525"), sdk.InvalidArgument, "every token is [UNK]"),
    ("stream: only unknown words", lambda c: c.paraphrase_stream("\U0001f600 \U0001f389"), sdk.InvalidArgument, "every token is [UNK]"),
    ("sampling option with greedy", lambda c: c.paraphrase(SOURCE, strategy="greedy", temperature=0.5), sdk.InvalidArgument, "temperature applies to strategy sample only"),
    ("seed with beam", lambda c: c.paraphrase(SOURCE, seed=3), sdk.InvalidArgument, "seed applies to strategy sample only, not to 'beam'"),
    ("groups with beam", lambda c: c.paraphrase(SOURCE, beam_groups=2), sdk.InvalidArgument, "beam_groups applies to strategy diverse_beam only"),
    ("beam width with sample", lambda c: c.paraphrase(SOURCE, strategy="sample", beam_width=4), sdk.InvalidArgument, "beam_width applies to strategy beam or diverse_beam only"),
    ("stream: top_k with greedy", lambda c: c.paraphrase_stream(SOURCE, top_k=5), sdk.InvalidArgument, "top_k applies to strategy sample only"),
    ("stream: beam cannot stream", lambda c: c.paraphrase_stream(SOURCE, strategy="beam"), sdk.InvalidArgument, "ParaphraseStream takes greedy or sample"),
    ("stream: diverse beam cannot stream", lambda c: c.paraphrase_stream(SOURCE, strategy="diverse_beam"), sdk.InvalidArgument, "cannot stream"),
    ("stream: unknown strategy", lambda c: c.paraphrase_stream(SOURCE, strategy="topk"), sdk.InvalidArgument, "greedy, sample"),
    ("stream: blank text", lambda c: c.paraphrase_stream("  "), sdk.InvalidArgument, "text is blank"),
    ("stream: unknown model", lambda c: c.paraphrase_stream(SOURCE, model="nope"), sdk.NotFound, "paraphraser 'nope' is not served"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "message"), _BAD_CALLS, ids=[c[0] for c in _BAD_CALLS])
def test_bad_input_gets_a_clear_status(client: sdk.Client, case, call, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as raised:
        result = call(client)
        if not isinstance(result, sdk.ParaphraseResult):
            list(result)  # a stream raises on its first iteration
    assert message in raised.value.message, raised.value.message
    assert "Traceback" not in raised.value.message


def _raw_call(address: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/facet.v1.Paraphrase/{method}")(payload, timeout=30)
    return raised.value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("temperature", float("nan"), "temperature must be a finite number > 0, got nan"),
     ("top_p", float("inf"), "top_p must be a finite number in (0, 1], got inf"),
     ("max_pairwise_bleu", float("nan"), "max_pairwise_bleu must be a finite number in [0, 100]"),
     ("diversity_penalty", -1.0, "diversity_penalty must be >= 0, got -1.0")],
)  # fmt: skip
def test_non_finite_numbers_are_refused_by_the_service(paraphrase_server, field: str, value: float, message: str) -> None:  # type: ignore[no-untyped-def]
    request = paraphrase_pb2.ParaphraseRequest(text=SOURCE, strategy="diverse_beam" if field == "diversity_penalty" else "sample")
    setattr(request, field, value)
    error = _raw_call(paraphrase_server.address, "Paraphrase", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details()


def test_invalid_utf8_is_invalid_argument(paraphrase_server) -> None:  # type: ignore[no-untyped-def]
    error = _raw_call(paraphrase_server.address, "Paraphrase", b"\x0a\x02\xff\xfe")  # field 1 (text), not UTF-8
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in error.details()
