"""The two LLM roles: the Questioner asks sub-questions, the Reasoner gives a Verdict.

Each role renders its prompt file, sends one batched call for all the samples it was given,
and validates every reply. Structured output (``with_structured_output(..., method=
"json_schema")``) is used where the chat model supports it; otherwise the tolerant parsers in
parsing.py read the text. An OpenAI-compatible server's form (``json_schema``, ``json_object``
with the schema, or plain text) is found out by its first request (structured.py). A reply
that still can't be used is sent back with the error (the ``repair`` prompt) and retried;
after the last attempt the role reports no value, and the agent records why the sample stopped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt

from idealagent import parsing
from idealagent.confidence import TokenLogprob, message_logprobs
from idealagent.errors import InputError, ModelOutputError, failure_kind, one_line
from idealagent.looking.closer import evidence_lines
from idealagent.prompts import PromptSpec, load_prompt
from idealagent.settings import StructuredMode
from idealagent.sight import Sight, attach_all, record_shown, sight_vars
from idealagent.structured import AdaptiveStructured, FormProbe, needs_probe, probe_for
from idealagent.trace import Failure, Shown, Trace, Verdict

log = logging.getLogger(__name__)

T = TypeVar("T")
# One or two sentences. The bound also keeps a small model from looping until max_new_tokens
# and never closing the JSON object.
ANALYSIS_MAX_CHARS = 240
OPEN_ANSWER_PATTERN = r"^[A-Za-z0-9\u00C0-\u024F][A-Za-z0-9\u00C0-\u024F .,'&/%+-]{0,59}$"


class RepeatedQuestionsError(ModelOutputError):
    """Every sub-question the questioner gave had been asked before. Not retried: its prompt
    already listed them, and a small model asked again mostly repeats itself again."""

    retryable = False


@dataclass
class Outcome(Generic[T]):
    """What a role produced for one sample: a value, or None after every attempt failed."""

    value: T | None = None
    failures: list[Failure] = field(default_factory=list)
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    last_error: ModelOutputError | None = None
    # The reply's generated tokens and their log-probabilities, where the model gives them.
    logprobs: list[TokenLogprob] | None = None
    # The model call itself failed for reasons outside the sample (a server down, retries
    # exhausted): not a reply to repair, and never a result. The agent decides what follows.
    infra_error: Exception | None = None
    form: str | None = None  # the structured-output form the role's model took (StructuredCaller.form)
    role: str = ""  # whose: questioner or reasoner
    shown: list[Shown] = field(default_factory=list)  # the images its model was shown (sight.py)


class _Pending(Exception):
    """Some replies in the batch are still unusable: tells tenacity to try again."""


class StructuredCaller:
    """Batched LLM calls that must yield a validated record, with repair-and-retry."""

    def __init__(
        self,
        llm: BaseChatModel,
        role: Literal["questioner", "reasoner", "answerer"],
        *,
        attempts: int = 3,
        structured: StructuredMode = "auto",
        prompts_dir: str | None = None,
    ) -> None:
        self.llm = llm
        self.role = role
        self.attempts = attempts
        self.structured = structured
        self.repair = load_prompt("repair", prompts_dir)
        self._runnables: dict[str, Any] = {}
        self._form: str | None = None  # the form chosen without a probe
        self._probe: FormProbe | None = None  # the shared probe of an OpenAI-compatible model

    def __call__(
        self,
        conversations: Sequence[list[BaseMessage]],
        schemas: Sequence[dict[str, Any]],
        parsers: Sequence[Callable[[dict[str, Any] | None, str], T]],
    ) -> list[Outcome[T]]:
        """Run every conversation, parse each reply with its parser, repair what fails."""
        outcomes: list[Outcome[T]] = [Outcome(role=self.role) for _ in conversations]
        conversations = [list(c) for c in conversations]
        pending = list(range(len(conversations)))
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.attempts), retry=retry_if_exception_type(_Pending)
            ):
                with attempt:
                    number = attempt.retry_state.attempt_number
                    pending = self._attempt(number, pending, conversations, schemas, parsers, outcomes)
                    if pending:
                        raise _Pending(f"{len(pending)} unusable replies")
        except RetryError:
            log.info("%s: %d replies unusable after %d attempts", self.role, len(pending), self.attempts)
        for outcome in outcomes:
            outcome.form = self.form
        return outcomes

    def _attempt(self, number, pending, conversations, schemas, parsers, outcomes) -> list[int]:
        still: list[int] = []
        # One batch per distinct schema: samples that share an answer format share a call.
        groups: dict[str, list[int]] = {}
        for i in pending:
            groups.setdefault(json.dumps(schemas[i], sort_keys=True), []).append(i)
        for indices in groups.values():
            runnable, structured = self._runnable(schemas[indices[0]])
            replies = runnable.batch([conversations[i] for i in indices], return_exceptions=True)
            for reply in replies:  # LangChain hands a Ctrl-C back as a reply: it is not one
                if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                    raise reply
            for i, reply in zip(indices, replies):
                outcome = outcomes[i]
                outcome.calls += 1
                if isinstance(reply, Exception) and failure_kind(reply) != "sample":
                    outcome.infra_error = reply  # the endpoint has retried it already
                    continue
                message, data, error = _unpack(reply, structured)
                if message is not None:
                    usage = message.usage_metadata or {}
                    outcome.input_tokens += usage.get("input_tokens", 0)
                    outcome.output_tokens += usage.get("output_tokens", 0)
                raw = _text(message)
                try:
                    if error is not None:
                        raise ModelOutputError(f"the model call failed: {error}", raw)
                    outcome.value = parsers[i](data, raw)
                    outcome.logprobs = message_logprobs(message)
                except ModelOutputError as exc:
                    outcome.last_error = exc
                    outcome.failures.append(
                        Failure(role=self.role, attempt=number, error=str(exc), raw=raw[:2000])
                    )
                    if exc.retryable:
                        if message is not None:
                            conversations[i] += [AIMessage(raw), *self.repair.render(error=str(exc))]
                        still.append(i)
        return still

    @property
    def form(self) -> str | None:
        """The structured-output form in use: ``json_schema``, ``json_object`` (with the
        schema) or ``text`` (the tolerant parsers); None before the first call, and while an
        endpoint's form is still unknown (its probe failed for a reason that says nothing)."""
        return self._probe.form if self._probe is not None else self._form

    def _runnable(self, schema: dict[str, Any]) -> tuple[Any, bool]:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._runnables:
            self._runnables[key] = self._make_runnable(schema)
        return self._runnables[key]

    def _make_runnable(self, schema: dict[str, Any]) -> tuple[Any, bool]:
        if self.structured == "auto" and needs_probe(self.llm):
            # A server may refuse json_schema: find out (once per model) which form it takes.
            self._probe = probe_for(self.llm)
            return AdaptiveStructured(self.llm, schema, self._probe, self.role), True
        if self.structured != "off":
            try:
                runnable = self.llm.with_structured_output(schema, method="json_schema", include_raw=True)
                self._form = "json_schema"
                return runnable, True
            except (NotImplementedError, ValueError, TypeError) as exc:
                if self.structured == "on":
                    raise
                log.debug("%s: no structured output (%s); parsing text", self.role, exc)
        self._form = "text"
        return self.llm, False


def _unpack(reply: Any, structured: bool) -> tuple[AIMessage | None, dict[str, Any] | None, Any]:
    """(raw message, parsed JSON object or None, call error or None) from a batch reply."""
    if isinstance(reply, Exception):
        return None, None, f"{type(reply).__name__}: {one_line(reply)}"
    if structured:
        parsed = reply.get("parsed")
        if hasattr(parsed, "model_dump"):
            parsed = parsed.model_dump()
        return reply.get("raw"), parsed if isinstance(parsed, dict) else None, None
    message = reply if isinstance(reply, AIMessage) else AIMessage(_text(reply))
    return message, parsing.extract_json(_text(message)), None


def _text(message: Any) -> str:
    return parsing.message_text(message)


def _prompt_vars(trace: Trace) -> dict[str, Any]:
    sample = trace.sample
    return {
        "question": sample.question,
        "kind": sample.kind,
        "choices": sample.choices or [],
        "caption": trace.caption or "none",
        "direct_answer": trace.direct.answer if trace.direct and trace.direct.answer else "",
        "evidence": [qa for r in trace.rounds for qa in r.sub_qas if qa.answer],
        "looks": evidence_lines(trace.search),
    }


class Questioner:
    """Asks 1..max_sub_questions new sub-questions per sample."""

    def __init__(
        self,
        llm: BaseChatModel,
        *,
        max_sub_questions: int = 3,
        prompt: PromptSpec | None = None,
        prompts_dir: str | None = None,
        **caller_options: Any,
    ) -> None:
        self.max_sub_questions = max_sub_questions
        self.prompt = prompt or load_prompt("questioner", prompts_dir)
        self.caller = StructuredCaller(llm, "questioner", prompts_dir=prompts_dir, **caller_options)

    @property
    def structured_form(self) -> str | None:
        """The structured-output form the questioner's model takes (see StructuredCaller.form)."""
        return self.caller.form

    def schema(self) -> dict[str, Any]:
        """The JSON schema of a reply: 1..max short questions ending in a question mark."""
        question = {"type": "string", "pattern": r'^[A-Z][^"\\\n?]{3,100}\?$'}
        items = {"type": "array", "items": question, "minItems": 1, "maxItems": self.max_sub_questions}
        return {
            "title": "SubQuestions",
            "type": "object",
            "properties": {"sub_questions": items},
            "required": ["sub_questions"],
        }

    def ask(self, traces: Sequence[Trace], sights: Sequence[Sight | None] | None = None) -> list[Outcome[list[str]]]:
        """New sub-questions for each trace, given everything it has seen so far; ``sights``:
        the images shown with each (sight.py), None for a blind questioner."""
        conversations = []
        for i, trace in enumerate(traces):
            verdict = trace.last_verdict
            conversations.append(
                self.prompt.render(
                    trace.sample.kind,
                    **_prompt_vars(trace),
                    **sight_vars(sights, i),
                    analysis=verdict.analysis if verdict else "",
                    max_sub_questions=self.max_sub_questions,
                )
            )
        schema = self.schema()
        parsers = [self._parser(trace) for trace in traces]
        return record_shown(self.caller(attach_all(conversations, sights), [schema] * len(traces), parsers), sights)

    def _parser(self, trace: Trace) -> Callable[[dict[str, Any] | None, str], list[str]]:
        asked = {parsing.normalize_question(q) for q in trace.sub_questions}

        def parse(data: dict[str, Any] | None, raw: str) -> list[str]:
            items = data.get("sub_questions") if data else None
            candidates = (
                [q.strip() for q in items if isinstance(q, str) and q.strip()]
                if isinstance(items, list)
                else parsing.parse_sub_questions(raw)
            )
            if not candidates:
                raise ModelOutputError('no sub-questions found; give {"sub_questions": [...]}', raw)
            fresh, seen = [], set(asked)
            for question in candidates:
                key = parsing.normalize_question(question)
                if key and key not in seen:
                    seen.add(key)
                    fresh.append(question)
            if not fresh:
                raise RepeatedQuestionsError(
                    "every sub-question was already asked; ask about something new", raw
                )
            return fresh[: self.max_sub_questions]

        return parse


class Reasoner:
    """Weighs the evidence and gives a Verdict; on the final round it must commit."""

    def __init__(
        self,
        llm: BaseChatModel,
        *,
        prompt: PromptSpec | None = None,
        prompts_dir: str | None = None,
        **caller_options: Any,
    ) -> None:
        self.prompt = prompt or load_prompt("reasoner", prompts_dir)
        self.caller = StructuredCaller(llm, "reasoner", prompts_dir=prompts_dir, **caller_options)
        self.prompts_dir = prompts_dir
        self._sampler: StructuredCaller | None = None  # the --votes caller, made on first use

    @property
    def structured_form(self) -> str | None:
        """The structured-output form the reasoner's model takes (see StructuredCaller.form)."""
        return self.caller.form

    @staticmethod
    def schema(trace: Trace) -> dict[str, Any]:
        """The JSON schema of a verdict; choice kinds constrain the answer to valid options."""
        sample = trace.sample
        if sample.kind == "multiple_choice":
            answer: dict[str, Any] = {"enum": [parsing.choice_letter(i) for i in range(len(sample.choices))]}
        elif sample.choices:
            answer = {"enum": list(sample.choices)}
        else:
            # A short phrase that starts like a word or a number: under constrained decoding a
            # small model otherwise fills the field with ".01", "{{car}}" or "); no; ...".
            answer = {"type": "string", "pattern": OPEN_ANSWER_PATTERN}
        return {
            "title": "Verdict",
            "type": "object",
            "properties": {
                "analysis": {"type": "string", "maxLength": ANALYSIS_MAX_CHARS},
                "answer": answer,
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["analysis", "answer", "confidence"],
        }

    def judge(self, traces: Sequence[Trace], final: Sequence[bool],
              sights: Sequence[Sight | None] | None = None) -> list[Outcome[Verdict]]:
        """A verdict for each trace; ``final[i]`` forces sample i to commit to an answer;
        ``sights``: the images shown with each (sight.py), None for a blind reasoner."""
        return record_shown(self.caller(*self._requests(traces, final, sights)), sights)

    def vote(self, traces: Sequence[Trace], final: Sequence[bool], votes: int,
             temperature: float, sights: Sequence[Sight | None] | None = None) -> list[list[Outcome[Verdict]]]:
        """``votes`` more verdicts per trace, sampled at ``temperature`` (one try each): their
        agreement with the verdict is the self-consistency signal."""
        llm = self.caller.llm
        if "temperature" not in type(llm).model_fields:
            raise InputError(f"--votes needs a reasoner model with a temperature; {type(llm).__name__} has none")
        if self._sampler is None or self._sampler.llm.temperature != temperature:
            self._sampler = StructuredCaller(llm.model_copy(update={"temperature": temperature}), "reasoner",
                                             attempts=1, structured=self.caller.structured,
                                             prompts_dir=self.prompts_dir)
        each = [s for s in sights for _ in range(votes)] if sights is not None else None
        requests = self._requests([t for t in traces for _ in range(votes)],
                                  [f for f in final for _ in range(votes)], each)
        outcomes = record_shown(self._sampler(*requests), each)
        return [outcomes[i * votes : (i + 1) * votes] for i in range(len(traces))]

    def _requests(self, traces: Sequence[Trace], final: Sequence[bool], sights: Sequence[Sight | None] | None
                  ) -> tuple[list[list[BaseMessage]], list[dict[str, Any]],
                             list[Callable[[dict[str, Any] | None, str], Verdict]]]:
        """The conversations, schemas and parsers of a verdict for each trace (``judge`` and
        ``vote`` send the same requests); ``sights``: the images shown with each, if it sees."""
        conversations = [self.prompt.render(trace.sample.kind, **_prompt_vars(trace), **sight_vars(sights, i),
                                            final=is_final) for i, (trace, is_final) in enumerate(zip(traces, final))]
        conversations = attach_all(conversations, sights)
        schemas = [self.schema(trace) for trace in traces]
        parsers = [self._parser(trace, is_final) for trace, is_final in zip(traces, final)]
        return conversations, schemas, parsers

    @staticmethod
    def _parser(trace: Trace, final: bool) -> Callable[[dict[str, Any] | None, str], Verdict]:
        choices = trace.sample.choices

        def parse(data: dict[str, Any] | None, raw: str) -> Verdict:
            fields = data if data is not None else parsing.parse_verdict_fields(raw)
            answer = fields.get("answer")
            # Small models dress answers up: "*drilling*", "`cat`", "Paris."
            answer = None if answer is None else str(answer).strip().strip("*_`'\" ").rstrip(".")
            confidence = parsing.parse_confidence(fields.get("confidence"))
            if confidence is None:
                raise ModelOutputError("no confidence between 0 and 1 found", raw)
            analysis = str(fields.get("analysis") or "").strip()
            if parsing.is_undecided(answer):
                if final:
                    raise ModelOutputError("this is the last round: give an answer, not 'unknown'", raw)
                return Verdict(analysis=analysis, answer=None, confidence=0.0)
            if not choices:
                # The schema's pattern, checked here too: a reply parsed from text (no
                # structured output, or a server that ignored the schema) is held to it as well.
                if not re.match(OPEN_ANSWER_PATTERN, answer):
                    raise ModelOutputError(
                        f"the answer {answer!r} is not a short phrase of letters and numbers", raw
                    )
                return Verdict(analysis=analysis, answer=answer, confidence=confidence)
            index = parsing.match_choice(answer, choices)
            if index is None:
                options = ", ".join(
                    f"{parsing.choice_letter(i)} ({c})" if trace.sample.kind == "multiple_choice" else c
                    for i, c in enumerate(choices)
                )
                raise ModelOutputError(f"the answer {answer!r} is not one of: {options}", raw)
            return Verdict(analysis=analysis, answer=choices[index], confidence=confidence, choice_index=index)

        return parse
