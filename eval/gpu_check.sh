#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine (no network; docs/benchmarks.md, "GPU"):
#
#     OUT=DIR bash eval/gpu_check.sh            # on the GPU: test_gpu.py, then the 3B-shaped benchmark
#     OUT=DIR bash eval/gpu_check.sh --dry-run  # the same steps on the CPU with tiny shapes (make test)
#
# 1. Installs the carried wheels (.gpu-wheels/, from `make gpu-wheels`) into a private target,
#    unless every module the package needs imports already. 2. Records the environment.
# 3. Runs tests/test_gpu.py. 4. Runs eval/bench_gpu.py. 5. Writes summary.txt and summary.json
# and prints the summary. Everything goes under $OUT (a new temporary folder when unset): log.txt,
# env.json, tests.xml, bench.jsonl, summary.txt, summary.json. Exit status 0 only when the
# summary says OK. Budget on an H200: about 4 minutes (an estimate), at most 8 (the limits below).
set -uo pipefail  # no -e: every step runs, and the summary says which one failed

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry-run ;;
  "") ;;
  *) echo "usage: eval/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
rm -f "$OUT"/{log.txt,env.json,tests.xml,bench.jsonl,summary.txt,summary.json}
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-$ROOT/.gpu-wheels}
SITE=${GPU_SITE:-/tmp/idealagent-gpu-site}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ "$MODE" = dry-run ]; then
  export CUDA_VISIBLE_DEVICES=""  # a CPU run even where a GPU is present
  BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:---tiny --device cpu --requests 4 --batch-sizes 1 4 --agent-samples 2}
  TESTS_TIMEOUT=${GPU_CHECK_TESTS_TIMEOUT:-120} BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-180}
else
  BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:---requests 64 --batch-sizes 1 8 32 --agent-samples 8}
  TESTS_TIMEOUT=${GPU_CHECK_TESTS_TIMEOUT:-150} BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-270}
fi
limit() {  # limit SECONDS COMMAND...: stop a step that overruns, so the summary still gets written
  if command -v timeout >/dev/null; then timeout -k 10 "$@"; else shift; "$@"; fi
}

steps() {
  echo "== 1/5 wheels (at ${SECONDS} s)"
  NEEDED=langchain_core,pydantic,tenacity,platformdirs,xgrammar
  if "$PY" -c "import $NEEDED" 2>/dev/null; then
    echo "every needed module imports already: nothing to install"
  elif compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "some of $NEEDED do not import and $WHEELS holds no wheels: run 'make gpu-wheels', carry .gpu-wheels"
  fi
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the package runs from source, not installed

  echo "== 2/5 environment (at ${SECONDS} s)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  "$PY" eval/gpu_check.py env --out "$OUT" --needed "$NEEDED"

  echo "== 3/5 tests/test_gpu.py (limit ${TESTS_TIMEOUT}s) (at ${SECONDS} s)"
  limit "$TESTS_TIMEOUT" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py \
    --junitxml="$OUT/tests.xml"
  TESTS_RC=$?

  echo "== 4/5 eval/bench_gpu.py $BENCH_ARGS (limit ${BENCH_TIMEOUT}s) (at ${SECONDS} s)"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  limit "$BENCH_TIMEOUT" "$PY" eval/bench_gpu.py $BENCH_ARGS --jsonl "$OUT/bench.jsonl"
  BENCH_RC=$?

  echo "== 5/5 summary (at ${SECONDS} s)"
  "$PY" eval/gpu_check.py summary --out "$OUT" --mode "$MODE" --tests-rc "$TESTS_RC" --bench-rc "$BENCH_RC" \
    --tests-timeout "$TESTS_TIMEOUT" --bench-timeout "$BENCH_TIMEOUT"
}

# A pipeline, not exec > >(tee): the script returns only once tee has written the last line.
steps 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
