"""The tiny VLMs on CUDA in bf16 through device_map="auto"; skipped without a GPU."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.tiny_vlms import BUILDERS

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_batched_equals_single_on_cuda_in_bf16(arch, tmp_path):
    from idealagent.answerers.transformers import TransformersAnswerer

    answerer = TransformersAnswerer.from_pretrained(BUILDERS[arch](tmp_path), max_new_tokens=6)
    assert answerer.model.dtype == torch.bfloat16 and answerer.model.device.type == "cuda"
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 30), "blue")
    requests = [(red, "What is it?"), (blue, "What colour is the shape?"), (red, "Is it a car?")]

    from idealagent.answerers import Answer

    def outcome(result):
        return result.text if isinstance(result, Answer) else getattr(result, "raw", str(result))

    batched = [outcome(r) for r in answerer.answer_each(requests)]
    assert batched == [outcome(answerer.answer_each([r])[0]) for r in requests]


def test_one_model_plays_every_role_on_cuda(tmp_path):
    from idealagent.agent import IdealAgent
    from idealagent.answerers.transformers import TransformersAnswerer

    answerer = TransformersAnswerer.from_pretrained(BUILDERS["qwen2_vl"](tmp_path), max_new_tokens=6)
    agent = IdealAgent(answerer.chat_model(max_new_tokens=700), answerer, max_rounds=1, max_sub_questions=1,
                       structured="auto", attempts=1)
    trace = agent.run(Image.new("RGB", (40, 30), "red"), "Is the picture red?", kind="yes_no")
    assert trace.error is None and trace.answer in {"yes", "no"}
