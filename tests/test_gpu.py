"""The tiny VLMs on CUDA through device_map="auto"; skipped without a GPU.

Batched answers must equal one-by-one answers exactly in fp32 with TF32 off. In bf16 that
would fail with no bug behind it: on most tiny models the top two logits are 0-2 bf16
rounding steps apart, and CUDA picks different kernels for different batch shapes. So bf16
is a smoke test: every request gets an answer or a clean empty-answer error.
"""

from __future__ import annotations

import pytest
from PIL import Image

from tests.tiny_vlms import BUILDERS

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def requests() -> list[tuple[Image.Image, str]]:
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 30), "blue")
    return [(red, "What is it?"), (blue, "What colour is the shape?"), (red, "Is it a car?")]


@pytest.fixture(scope="module", params=list(BUILDERS))
def vlm_dir(request, tmp_path_factory):
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture
def full_fp32():
    """fp32 matmuls and convolutions without TF32 while the test runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_batched_equals_single_on_cuda_in_fp32(vlm_dir, full_fp32):
    from idealagent.answerers.transformers import TransformersAnswerer

    answerer = TransformersAnswerer.from_pretrained(vlm_dir, dtype=torch.float32, max_new_tokens=6)
    assert answerer.model.dtype == torch.float32 and answerer.model.device.type == "cuda"

    from idealagent.answerers import Answer

    def outcome(result):
        return result.text if isinstance(result, Answer) else getattr(result, "raw", str(result))

    batched = [outcome(r) for r in answerer.answer_each(requests())]
    assert batched == [outcome(answerer.answer_each([r])[0]) for r in requests()]


def test_bf16_batch_answers_every_request_on_cuda(vlm_dir):
    from idealagent.answerers.transformers import TransformersAnswerer
    from idealagent.errors import ModelOutputError

    answerer = TransformersAnswerer.from_pretrained(vlm_dir, max_new_tokens=6)
    assert answerer.model.dtype == torch.bfloat16 and answerer.model.device.type == "cuda"
    results = answerer.answer_each(requests())
    assert len(results) == len(requests())
    # A random model may say nothing (PaliGemma's writes only "\n"): that must be the clean error.
    assert all((isinstance(r, str) and r) or isinstance(r, ModelOutputError) for r in results), results


def test_one_model_plays_every_role_on_cuda(tmp_path):
    from idealagent.agent import IdealAgent
    from idealagent.answerers.transformers import TransformersAnswerer

    answerer = TransformersAnswerer.from_pretrained(BUILDERS["qwen2_vl"](tmp_path), max_new_tokens=6)
    agent = IdealAgent(answerer.chat_model(max_new_tokens=700), answerer, max_rounds=1, max_sub_questions=1,
                       structured="auto", attempts=1)
    trace = agent.run(Image.new("RGB", (40, 30), "red"), "Is the picture red?", kind="yes_no")
    assert trace.error is None and trace.answer in {"yes", "no"}
