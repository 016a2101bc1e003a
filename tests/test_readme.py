"""The README's SDK quickstart runs exactly as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.integration


def _quickstart_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## SDK quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _run_blocks(blocks: list[str], env: dict[str, str], tmp_path: Path, name: str) -> list[str]:
    """Run each README block as its own script with `env` on top of this one's; their stdouts
    (a block that exits non-zero fails the test with its stderr)."""
    outputs = []
    for i, block in enumerate(blocks):
        script = tmp_path / f"{name}_{i}.py"
        script.write_text(block)
        result = subprocess.run([sys.executable, str(script)], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return outputs


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make run", "make test"]


@pytest.mark.parametrize("retrieval_server", ["onnxruntime", "milvus"], indirect=True)  # the SDK example on each store, not the backends
def test_quickstart_runs_as_written(retrieval_address: str, tmp_path: Path) -> None:
    blocks = _quickstart_blocks()
    assert len(blocks) == 2
    outputs = _run_blocks(blocks, {"FACET_RETRIEVAL_ADDR": retrieval_address}, tmp_path, "quickstart")
    assert "(2, 384) float32" in outputs[0]
    lines = outputs[0].splitlines()
    assert lines[1].startswith("a ") and "Eiffel" in lines[1]  # best English hit first
    assert not any(line.startswith("b ") for line in lines)  # the German one is filtered out
    assert "rejected: texts is empty" in outputs[0]
    assert outputs[1].strip() == "(2, 384) c"


README_SAE_LARGE = "smollm2-135m-l15-batchtopk-w4608"
README_SAE_SMALL = "smollm2-135m-l15-batchtopk-w1152"


@pytest.mark.parametrize("sae_server", ["onnxruntime"], indirect=True)  # the SDK example, not the backends
def test_sae_example_runs_as_written(sae_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The README's SAE example, with the default family's ids swapped for the test family's."""
    from tests.services.sae.fixtures import TEST_SAE_LARGE, TEST_SAE_SMALL

    section = README.read_text().split("## SAE analysis", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    assert README_SAE_LARGE in block and README_SAE_SMALL in block
    script = tmp_path / "sae_example.py"
    script.write_text(block.replace(README_SAE_LARGE, TEST_SAE_LARGE).replace(README_SAE_SMALL, TEST_SAE_SMALL))
    env = {**os.environ, "FACET_SAE_ADDR": sae_server.address}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert TEST_SAE_LARGE in out and "' Einstein'" in out
    assert "[[" in out and "decomposes into" in out and "meta-latent" in out
    assert "novel / " in out and "reconstruction latents" in out


@pytest.mark.parametrize("nextframe_server", ["onnxruntime"], indirect=True)  # the SDK example, not the backends
def test_nextframe_example_runs_as_written(nextframe_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    section = README.read_text().split("## Next-frame prediction", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    script = tmp_path / "nextframe_example.py"
    script.write_text(block)
    env = {**os.environ, "FACET_NEXTFRAME_ADDR": nextframe_server.address}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gravity ≈ ") and "m/s²" in result.stdout
    assert (tmp_path / "rollout.gif").stat().st_size > 0


def test_paraphrase_examples_run_as_written(start_paraphrase_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Paraphrase section's two examples (sync and async) against a real server on the tiny test paraphraser."""
    section = README.read_text().split("\n## Paraphrase\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:2]
    assert "client.paraphrase(" in blocks[0] and "AsyncClient" in blocks[1]
    server = start_paraphrase_server()
    outputs = _run_blocks(blocks, {"FACET_PARAPHRASE_ADDR": server.address}, tmp_path, "paraphrase")
    assert "rejected: text has" in outputs[0] and "truncate=True" in outputs[0]  # the over-long text, refused
    assert outputs[1].strip()  # the async example printed its paraphrases and streamed tokens


def test_phenotype_example_runs_as_written(start_phenotype_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Phenotype editing section's SDK example against a real server on the tiny test face models:
    it prints what it says and writes the grid."""
    from tests.services.phenotype.fixtures import TEST_IMAGE_SIZE

    section = README.read_text().split("\n## Phenotype editing\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    assert "client.edit_phenotype(" in block and "sdk.save_grid(" in block
    script = tmp_path / "phenotype_example.py"
    script.write_text(block)
    env = {**os.environ, "FACET_PHENOTYPE_ADDR": start_phenotype_server().address}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "skin_tone" in lines[0] and str(TEST_IMAGE_SIZE) in lines[0]
    assert lines[1] == "Fitzpatrick type I (lightest) -> Fitzpatrick type VI (darkest)"
    assert re.fullmatch(r"[01]\.\d+ -?\d\.\d+", lines[2])  # the face's drawn skin_tone factor and its reading
    assert "'skin_tone': 0.2" in lines[3] and "hair_colour" in lines[3]
    achieved = [float(v) for v in lines[-3].strip("[]").split(", ")]  # the strip's readings, one per face
    assert len(achieved) == 5 and achieved[0] < achieved[-1]  # hair_colour 0 -> 1: read lighter ... blonder
    assert lines[-1] == f"(5, {TEST_IMAGE_SIZE}, {TEST_IMAGE_SIZE}, 3)"
    assert (tmp_path / "edit.png").read_bytes().startswith(b"\x89PNG")

    # the stored evaluation's example: one line per attribute
    evaluation = next(b for b in re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL) if 'metrics["evaluation"]' in b)
    script.write_text(evaluation)
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 7 and lines[0].startswith("skin_tone: ")
    assert all(re.fullmatch(r"\w+: \d+% of edits within ±0\.1, error \d\.\d\d \(no edit: \d\.\d\d\)", line) for line in lines), lines
