#!/usr/bin/env bash
# Make .venv-infinity beside the checkout: Infinity (infinity-emb, PyPI), the server the
# Facet-vs-Infinity benchmark (load/bench_rerank.py) runs. Its own virtualenv: infinity-emb 0.0.78
# pins numpy < 2 and sentence-transformers < 4, which clash with Facet's.
#
#   bash load/install_infinity.sh [PYTHON]     # PYTHON: a 3.9-3.13 interpreter (default: python3.11, else python3)
#
# Installs torch's CPU build first (the local wheel, as the Makefile does for .venv), then
# infinity-emb with the extras that serve embeddings and rerank on the CPU: server (FastAPI, uvicorn),
# torch (its default engine: sentence-transformers) and optimum (ONNX Runtime, --engine optimum).
# The versions below are the ones the benchmark's figures were measured with. Nothing downloads a
# model: the benchmark serves local directories with HF_HUB_OFFLINE=1. 2-6 minutes on this project's 2-core machine, ~1.5 GB.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-infinity
PYTHON=${1:-$(command -v python3.11 || command -v python3)}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q \
    "infinity-emb[server,torch,optimum]==0.0.78" \
    sentence-transformers==3.4.1 \
    transformers==4.57.6 \
    tokenizers==0.22.2 \
    huggingface_hub==0.36.2 \
    numpy==1.26.4 \
    onnxruntime==1.32.0 \
    optimum==2.1.0 \
    optimum-onnx==0.1.0 \
    fastapi==0.165.0 \
    uvicorn==0.32.1
"$VENV/bin/infinity_emb" v2 --help > /dev/null
echo "Infinity installed in $VENV: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("infinity-emb"))')"
