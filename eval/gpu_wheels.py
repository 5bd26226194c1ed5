"""Download the wheels that the lent GPU machine's image lacks, for its Python (``make gpu-wheels``).

The GPU machine has no network, so whatever idealagent needs beyond the image travels as wheels
in an ignored folder (``.gpu-wheels/``) and ``eval/gpu_check.sh`` installs them with
``pip install --no-index --no-deps --target``. The list is derived, not typed: the requirements
are read from pyproject.toml (the core dependencies, the ``local`` extra, and pytest from the
``dev`` extra), pip resolves them with every transitive dependency for CPython 3.12 on
manylinux x86-64 (metadata only: nothing is downloaded for this step), and what the image
already ships (``IMAGE_PACKAGES``) is dropped. Only the rest is downloaded, ``--no-deps``, at
the resolved versions.

    python eval/gpu_wheels.py [--dest .gpu-wheels]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.12"  # the image's python3 is 3.12.3
# pip matches each manylinux tag exactly, so every one up to the image's glibc is named. The
# image runs torch 2.11's manylinux_2_28 wheel, so its glibc is at least 2.28; nothing newer is assumed.
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in range(5, 29))]
# The working tree and the carried folders travel together under this limit.
TRAVEL_LIMIT_MIB = 64
# Versions the image is known to have (the device notes' pip list, 2026-11): the resolution is
# pinned to them, so what we carry works with what is there.
IMAGE_VERSIONS = {
    "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0", "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0", "numpy": "2.5.2", "tokenizers": "0.23.2", "safetensors": "0.8.0",
    "torchvision": "0.26.0", "sentencepiece": "0.2.2", "tiktoken": "0.14.0",
}
# Every Python package the GPU image ('cuda') holds, as the device notes listed them on 2026-11-17.
IMAGE_PACKAGES = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless opt-einsum opt-einsum-fx optax
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil py-cpuinfo pyarrow pybind11 pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentence-transformers sentencepiece setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torch-geometric torchaudio torchdiffeq torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# What the GPU check needs from the dev extra: the test runner (test_gpu.py uses nothing else).
DEV_NEEDED = {"pytest"}


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The package's own requirements that the GPU check imports: core, ``local``, pytest."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        sys.exit("eval/gpu_wheels.py needs Python 3.11 or later (tomllib) to read pyproject.toml")

    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    dev = [r for r in extras["dev"] if requirement_name(r) in DEV_NEEDED]
    return [*project["dependencies"], *extras["local"], *dev]


def target_options() -> list[str]:
    """pip options that select wheels for the image's interpreter and platform."""
    options = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        options += ["--platform", platform]
    return options


def resolve(reqs: list[str]) -> dict[str, str]:
    """Every distribution the requirements need on the image, name -> version (pip's resolver)."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp, "image.txt")
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in IMAGE_VERSIONS.items()))
        report = Path(tmp, "report.json")
        # --target: older pips take the platform options only with it; --dry-run installs nothing.
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                        "--report", str(report), "--target", str(Path(tmp, "site")),
                        "--constraint", str(constraints), *target_options(), "--platform", "any", *reqs],
                       check=True)
        installs = json.loads(report.read_text())["install"]
    return {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def download(wanted: dict[str, str], dest: Path) -> None:
    """The wanted wheels into ``dest``, and nothing else left there (one version of each)."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in sorted(wanted.items())]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *target_options(),
                    "--dest", str(dest), *pins], check=True)
    keep = set(wanted.items())
    for wheel in dest.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if (canonical(name), version) not in keep:
            wheel.unlink()  # an older resolution's wheel: two versions would stop the install
    (dest / "requirements.txt").write_text("".join(f"{pin}\n" for pin in pins))


def mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def tracked_files() -> list[Path]:
    """The files of the working tree that travel with every device call (tracked ones)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    return [ROOT / name for name in listed.stdout.split("\0") if name] if listed.returncode == 0 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-wheels")
    args = parser.parse_args()

    reqs = requirements()
    resolved = resolve(reqs)
    wanted = {name: version for name, version in resolved.items() if name not in IMAGE_PACKAGES}
    print(f"requirements: {' '.join(reqs)}")
    carried = ", ".join(f"{name}=={version}" for name, version in sorted(wanted.items()))
    print(f"resolved for CPython {PYTHON_VERSION}: {len(resolved)} distributions; the image has "
          f"{len(resolved) - len(wanted)}; carried: {carried}")
    download(wanted, args.dest)
    wheels = sorted(args.dest.glob("*.whl"))
    size, tree = mib(wheels), mib(tracked_files())
    print(f"{args.dest}: {len(wheels)} wheels, {size:.1f} MiB; with the tracked tree ({tree:.1f} MiB) "
          f"{size + tree:.1f} MiB of the {TRAVEL_LIMIT_MIB} MiB that may travel")
    if size + tree >= TRAVEL_LIMIT_MIB:
        sys.exit(f"too large to carry: {size + tree:.1f} MiB >= {TRAVEL_LIMIT_MIB} MiB")


if __name__ == "__main__":
    main()
