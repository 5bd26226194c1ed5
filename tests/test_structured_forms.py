"""``structured="auto"`` against servers that take different forms of structured output: the
first request finds the form, later ones keep to it, and a refused form is not sent again."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from PIL import Image

from idealagent import IdealAgent, Sample
from idealagent.answerers.openai import OpenAIAnswerer
from idealagent.errors import InfrastructureError, ModelOutputError
from idealagent.llms.openai import make_chat_model
from idealagent.roles import Questioner
from idealagent.structured import AdaptiveStructured, FormProbe, form_rejected, needs_probe, probe_for
from idealagent.testing import IDEALGPT_LOOP
from tests.openai_stub import LLAMA_CPP_PYTHON_REFUSAL, Status, StubServer, format_of, text_of

FAST = {"retry_initial_wait": 0.01, "retry_max_wait": 0.02}
QUESTION = "What colour is the object?"


def is_role(body: dict) -> bool:
    """Not the answerer's request (prompts/vlm_answerer.yaml): a questioner's or reasoner's,
    which may carry the picture too where one VLM serves every role (--roles-see auto)."""
    text = text_of(body)
    return not (text.startswith("Describe the image") or text.endswith("with a single word or phrase."))


def endpoint(body: dict) -> str:
    """One server for every role; the LLM's replies do not depend on the form it was asked in."""
    if not is_role(body):  # the answerer: the image and its prompt's text
        return "A red square." if text_of(body).startswith("Describe") else "red"
    if body["messages"][0]["content"].startswith("You help answer"):  # the questioner
        return json.dumps({"sub_questions": [QUESTION]})
    answer = "yes" if "Is the object red?" in text_of({"messages": body["messages"][-1:]}) else "red"
    return json.dumps({"analysis": "The assistant saw red.", "answer": answer, "confidence": 0.9})


def llm_forms(stub: StubServer) -> Counter:
    """How many questioner/reasoner requests came in each form (None: no response_format)."""
    return Counter(format_of(b) for b in stub.requests if is_role(b))


def endpoint_model(stub: StubServer):
    return make_chat_model("stub-llm", stub.base_url, timeout=5.0, attempts=4, **FAST)


def plain_chat_openai(stub: StubServer):
    return ChatOpenAI(model="stub-llm", base_url=stub.base_url, api_key="EMPTY", max_retries=0, temperature=0)


SERVERS = [
    pytest.param({}, "json_schema", id="vllm-takes-json_schema"),
    pytest.param({"json_schema": LLAMA_CPP_PYTHON_REFUSAL}, "json_object", id="llama-cpp-python-500"),
    pytest.param({"json_schema": Status(400, "response_format type json_schema is not supported")},
                 "json_object", id="refuses-with-400"),
    pytest.param({"json_schema": Status(400, "unsupported"), "json_object": Status(422, "unknown field")},
                 "text", id="refuses-both"),
]


@pytest.mark.parametrize("make_llm", [endpoint_model, plain_chat_openai],
                         ids=["EndpointChatModel", "ChatOpenAI"])
@pytest.mark.parametrize(("refuse", "form"), SERVERS)
def test_auto_finds_the_form_once_and_completes_every_sample(refuse, form, make_llm):
    with StubServer(endpoint, refuse=refuse) as stub:
        answerer = OpenAIAnswerer("stub-vlm", stub.base_url, timeout=5.0, **FAST)
        agent = IdealAgent(make_llm(stub), answerer, max_rounds=2, **IDEALGPT_LOOP)
        image = Image.new("RGB", (8, 8), "red")
        traces = agent.run_batch([Sample(image=image, question=QUESTION),
                                  Sample(image=image, question="Is the object red?", kind="yes_no"),
                                  Sample(image=image, question="What colour is the thing?")])

        assert [(t.stop_reason, t.answer) for t in traces] == [("confident", "red"), ("confident", "yes"),
                                                               ("confident", "red")]
        assert all(not r.failures for t in traces for r in t.rounds)  # no refusal reached a sample
        assert agent.questioner.structured_form == agent.reasoner.structured_form == form
        # One probe for the model the two roles share: each refused form was sent once, no more.
        forms = llm_forms(stub)
        calls = 6  # a questioner and a reasoner call for each of the 3 samples
        assert forms == Counter({**{refused: 1 for refused in refuse},
                                 (None if form == "text" else form): calls})
        if form == "json_object":
            sent = next(b["response_format"] for b in stub.requests if format_of(b) == "json_object")
            assert sent["schema"] == agent.questioner.schema()


def test_structured_on_and_off_do_not_probe():
    with StubServer(endpoint, refuse={"json_schema": LLAMA_CPP_PYTHON_REFUSAL}) as stub:
        llm = endpoint_model(stub)
        [off] = Questioner(llm, structured="off").ask([_trace()])
        assert off.value == [QUESTION] and llm_forms(stub) == Counter({None: 1})
        [on] = Questioner(llm, structured="on", attempts=1).ask([_trace()])
        assert on.value is None and "rejected with HTTP 500" in on.failures[0].error
        assert llm_forms(stub) == Counter({None: 1, "json_schema": 1})  # refused, and not retried


def test_a_failure_that_says_nothing_about_the_form_leaves_it_unknown():
    with StubServer(endpoint, refuse={"json_schema": Status(400, "no json_schema here")}) as stub:
        llm = make_chat_model("stub-llm", stub.base_url, timeout=5.0, attempts=1, **FAST)
        probe = FormProbe()
        caller = AdaptiveStructured(llm, Questioner(llm).schema(), probe, "questioner")
        conversation = [SystemMessage("You help answer."), HumanMessage("Ask.")]
        stub.refuse.pop("json_schema")
        stub.queue(Status(503))  # the server is briefly down
        [reply] = caller.batch([conversation])
        assert isinstance(reply, InfrastructureError) and not form_rejected(reply) and probe.form is None
        stub.refuse["json_schema"] = Status(400, "no json_schema here")
        replies = caller.batch([conversation] * 3)  # probes again: the first goes alone
        assert [r["parsed"] for r in replies] == [{"sub_questions": [QUESTION]}] * 3
        assert probe.form == "json_object"
        assert [format_of(b) for b in stub.requests] == ["json_schema", "json_schema"] + ["json_object"] * 3


def test_callers_that_share_a_model_share_one_probe_across_threads():
    with StubServer(endpoint, latency=0.05, refuse={"json_schema": LLAMA_CPP_PYTHON_REFUSAL}) as stub:
        llm = endpoint_model(stub)
        assert probe_for(llm) is probe_for(llm) and probe_for(llm) is not probe_for(endpoint_model(stub))
        questioners = [Questioner(llm) for _ in range(4)]
        results: list = []
        threads = [threading.Thread(target=lambda q=q: results.extend(q.ask([_trace()] * 2)))
                   for q in questioners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.value for r in results] == [[QUESTION]] * 8
        assert llm_forms(stub) == Counter({"json_schema": 1, "json_object": 8})
        assert {q.structured_form for q in questioners} == {"json_object"}


def test_a_500_that_refuses_the_response_format_is_not_retried():
    with StubServer(endpoint) as stub:
        llm = endpoint_model(stub)
        stub.queue(LLAMA_CPP_PYTHON_REFUSAL)
        with pytest.raises(ModelOutputError, match="rejected with HTTP 500: response_format.type") as caught:
            llm.invoke("Hi")
        assert form_rejected(caught.value) and len(stub.requests) == 1
        stub.queue(Status(500, "CUDA out of memory"))  # an ordinary server error is still retried
        assert json.loads(llm.invoke("Hi").content)["answer"] == "red" and len(stub.requests) == 3


def ask_through_the_cli(monkeypatch) -> tuple[dict, Counter]:
    """``idealagent ask --preset openai --json`` against a llama-cpp-python-like stub: the
    trace, and the LLM requests in each form."""
    from tests.test_cli import CAT, invoke

    with StubServer(endpoint, refuse={"json_schema": LLAMA_CPP_PYTHON_REFUSAL}) as stub:
        monkeypatch.setenv("IDEALAGENT_LLM_BASE_URL", stub.base_url)  # one server for every role
        monkeypatch.setenv("IDEALAGENT_LLM_MODEL", "stub-llm")
        for name in ("IDEALAGENT_VLM_BASE_URL", "IDEALAGENT_VLM_MODEL"):
            monkeypatch.delenv(name, raising=False)
        result = invoke("ask", CAT, QUESTION, "--preset", "openai", "--json", "--calibration", "stated")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout), llm_forms(stub)


def test_the_cli_with_auto_completes_against_a_server_without_json_schema(monkeypatch):
    trace, forms = ask_through_the_cli(monkeypatch)
    assert trace["answer"] == "red" and trace["stop_reason"] == "confident"
    assert trace["settings"]["structured"] == "auto"
    assert forms == Counter({"json_schema": 1, "json_object": 2})  # one refusal, then two calls
    # One VLM serves every role, so the questioner and the reasoner were shown the picture.
    assert set(trace["shown"]) == {"questioner", "reasoner"}


def test_the_cli_trace_settings_record_the_form(monkeypatch):
    trace, _ = ask_through_the_cli(monkeypatch)
    _settings_record_the_form(trace["settings"])


def test_trace_settings_record_the_form():
    with StubServer(endpoint, refuse={"json_schema": LLAMA_CPP_PYTHON_REFUSAL}) as stub:
        answerer = OpenAIAnswerer("stub-vlm", stub.base_url, timeout=5.0, **FAST)
        trace = IdealAgent(endpoint_model(stub), answerer, **IDEALGPT_LOOP).run(Image.new("RGB", (8, 8), "red"), QUESTION)
        _settings_record_the_form(trace.settings)


def _settings_record_the_form(settings: dict) -> None:
    assert settings.get("structured_form") == {"questioner": "json_object", "reasoner": "json_object"}


def _trace():
    from idealagent.trace import Trace

    return Trace(sample=Sample(question="What colour is the thing?"))


def test_a_local_model_is_not_probed_and_langchain_openai_stays_unimported():
    """Only OpenAI clients are probed; asking about another model must not import langchain-openai
    (about a second of a warm ``idealagent ask`` on the tiny preset went there)."""
    code = ("import sys\n"
            "from idealagent.structured import needs_probe\n"
            "from idealagent.testing import ScriptedChatModel\n"
            "print(needs_probe(ScriptedChatModel(replies=[])), 'langchain_openai' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_openai_clients_are_probed():
    url = "http://127.0.0.1:9/v1"  # never called
    assert needs_probe(ChatOpenAI(model="stub-llm", base_url=url, api_key="EMPTY"))
    assert needs_probe(make_chat_model("stub-llm", url, timeout=5.0))
