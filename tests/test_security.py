"""Secrets stay where they belong: OPENAI_API_KEY goes to OpenAI's API only, each server gets
its own key, no key shows in a repr, a log line, a trace or an error; and model weights are
unpickled weights-only."""

from __future__ import annotations

import ast
import logging
import socket
from pathlib import Path

import pytest
from PIL import Image

from idealagent import IdealAgent
from idealagent.answerers.openai import OpenAIAnswerer
from idealagent.endpoints import endpoint_from_env
from idealagent.errors import IdealAgentError
from idealagent.examples import example_image
from idealagent.llms.openai import make_chat_model
from idealagent.presets import build_openai_preset
from tests.openai_stub import StubServer
from tests.test_openai_backends import scripted_endpoint

PACKAGE = Path(__file__).resolve().parent.parent / "idealagent"
OPENAI_KEY = "sk-openai-SECRET-0001"
LLM_KEY = "sk-llm-SECRET-0002"


class KeyRecordingStub(StubServer):
    """The stub OpenAI server, also recording the Authorization header of every request."""

    def __init__(self) -> None:
        super().__init__(reply=scripted_endpoint)
        self.authorizations: list[str | None] = []
        stub, base = self, self._server.RequestHandlerClass

        class Recording(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                stub.authorizations.append(self.headers.get("Authorization"))
                super().do_POST()

        self._server.RequestHandlerClass = Recording


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for prefix in ("IDEALAGENT_LLM", "IDEALAGENT_VLM"):
        for name in ("BASE_URL", "MODEL", "API_KEY", "MAX_CONCURRENCY", "TIMEOUT", "ATTEMPTS", "MAX_TOKENS"):
            monkeypatch.delenv(f"{prefix}_{name}", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    return monkeypatch


@pytest.mark.parametrize(
    ("base_url", "openai_key"),
    [
        ("https://api.openai.com/v1", True),
        ("https://API.openai.com/v1", True),
        ("http://api.openai.com/v1", False),  # plain http: anyone on the path could read it
        ("https://api.openai.com.example.net/v1", False),
        ("https://api.openai.com@example.net/v1", False),  # the host here is example.net
        ("https://example.net/api.openai.com/v1", False),
        ("http://127.0.0.1:8000/v1", False),
    ],
)
def test_the_openai_key_goes_to_openais_api_only(env: pytest.MonkeyPatch, base_url: str,
                                                 openai_key: bool) -> None:
    env.setenv("IDEALAGENT_VLM_BASE_URL", base_url)
    env.setenv("IDEALAGENT_VLM_MODEL", "m")
    assert endpoint_from_env("IDEALAGENT_VLM").api_key == (OPENAI_KEY if openai_key else "EMPTY")
    env.setenv("IDEALAGENT_VLM_API_KEY", "sk-own")  # a server's own key always wins
    assert endpoint_from_env("IDEALAGENT_VLM").api_key == "sk-own"


def test_each_server_gets_only_its_own_key_and_no_key_reaches_a_repr_log_or_trace(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with KeyRecordingStub() as llm_server, KeyRecordingStub() as vlm_server:
        env.setenv("IDEALAGENT_LLM_BASE_URL", llm_server.base_url)
        env.setenv("IDEALAGENT_LLM_MODEL", "llm")
        env.setenv("IDEALAGENT_LLM_API_KEY", LLM_KEY)
        env.setenv("IDEALAGENT_VLM_BASE_URL", vlm_server.base_url)
        env.setenv("IDEALAGENT_VLM_MODEL", "vlm")
        models = build_openai_preset()
        # The stated confidence decides, so the loop runs and the LLM's server is asked too.
        trace = IdealAgent(models["llm"], models["answerer"], max_rounds=1, calibration="stated").run(
            example_image("cat"), "What colour is the cat?")
    assert trace.stop_reason != "error", trace.error
    assert llm_server.authorizations and set(llm_server.authorizations) == {f"Bearer {LLM_KEY}"}
    assert vlm_server.authorizations and set(vlm_server.authorizations) == {"Bearer EMPTY"}
    shown = [repr(models["llm"]), str(models["llm"]), repr(models["answerer"]), trace.model_dump_json(),
             repr(endpoint_from_env("IDEALAGENT_LLM")), caplog.text]
    for text in shown:
        assert LLM_KEY not in text and OPENAI_KEY not in text


def test_keys_in_urls_and_arguments_stay_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://user:{LLM_KEY}@127.0.0.1:{port}/v1"
    fast = {"attempts": 2, "retry_initial_wait": 0.01, "retry_max_wait": 0.02, "timeout": 2.0}
    llm = make_chat_model("llm", base_url, api_key=OPENAI_KEY, **fast)
    answerer = OpenAIAnswerer("vlm", base_url, api_key=OPENAI_KEY, **fast)
    caplog.set_level(logging.DEBUG)
    errors = []
    for call in (lambda: llm.invoke("hi"), lambda: answerer.caption([Image.new("RGB", (4, 4))])):
        with pytest.raises(IdealAgentError) as error:
            call()
        errors.append(str(error.value))
    assert all("cannot connect" in e and "***@127.0.0.1" in e for e in errors), errors
    for text in [*errors, repr(llm), repr(answerer), caplog.text]:
        assert LLM_KEY not in text and OPENAI_KEY not in text


# -- model weights -----------------------------------------------------------------------------


def torch_load_calls() -> list[tuple[str, ast.Call]]:
    """Every ``torch.load(...)`` call in the package's source, with where it is."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = getattr(node, "func", None)
            if (isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and func.attr == "load"
                    and isinstance(func.value, ast.Name) and func.value.id == "torch"):
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return calls


def test_every_torch_load_in_the_package_says_weights_only() -> None:
    calls = torch_load_calls()
    assert any(where.startswith("answerers/perception.py") for where, _ in calls)
    for where, call in calls:
        flags = {k.arg: k.value for k in call.keywords}
        weights_only = flags.get("weights_only")
        assert isinstance(weights_only, ast.Constant) and weights_only.value is True, where


def test_the_efficientnet_weights_are_loaded_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from idealagent.answerers.perception import ImageNetClassifier

    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    classifier = ImageNetClassifier()
    assert seen == [True]
    assert len(classifier.labels) == 1000
