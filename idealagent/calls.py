"""The model work of each step, for a batch of samples at that step (machine.py says what the
results mean). A call touches no trace, so it is safe on a worker thread; it returns one
result per job, and raises only what stops the run (a service that is down) or a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from idealagent.answerers import answer_each, ask_or_choose, caption_each, detect_each
from idealagent.direct import by_likelihood
from idealagent.machine import Job, Step, direct_question_of, down_error
from idealagent.sight import sights_for

if TYPE_CHECKING:
    from idealagent.agent import IdealAgent


@dataclass(frozen=True)
class StepSpec:
    """One step: the model that serves it and its batched call."""

    step: Step
    model: Callable[[IdealAgent], Any]
    call: Callable[[IdealAgent, list[Job]], list[Any]]


def caption(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """A caption (or the sample's failure) per job."""
    return caption_each(agent.answerer, [job.image for job in jobs])


def direct(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """The answerer's reply to the main question (or the sample's failure) per job."""
    return ask_or_choose(agent.answerer, [(job.image, direct_question_of(job.trace, agent.settings),
                                           scored_options(agent, job)) for job in jobs])


def scored_options(agent: IdealAgent, job: Job) -> list[str] | None:
    """The options the answerer scores for the job's main question (``--scoring likelihood`` and
    a multiple-choice sample), or None: it is asked."""
    sample = job.trace.sample
    return list(sample.choices or []) if by_likelihood(agent.settings.option_scoring, sample.kind,
                                                       sample.choices) else None


def look(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """The replies (each a reply or a failure) to each job's pending look requests: views cut
    from the full-resolution picture; descriptions through ``caption``, questions ``answer``."""
    asked: list[tuple[Any, str, list[str] | None]] = []  # (view, question, options scored) of questions
    described: list[tuple[int, Any]] = []
    sought: list[tuple[Any, str]] = []  # (view, target) for the answerer's detector
    per_job: list[list[tuple[str, int]]] = []  # for each job, (which list, position in it) per request
    for position, job in enumerate(jobs):
        closer = job.closer
        order: list[tuple[str, int]] = []
        for request in closer.requests() if closer is not None else []:
            view = closer.view(request)  # type: ignore[union-attr]
            if request.kind == "describe":
                order.append(("describe", len(described)))
                described.append((position, view))
            elif request.kind == "detect":
                order.append(("detect", len(sought)))
                sought.append((view, closer.search.target))  # type: ignore[union-attr]
            else:
                order.append(("ask", len(asked)))
                # The main question on a view is answered as the direct answer is (by likelihood or not).
                options = scored_options(agent, job) if request.kind == "answer" else None
                asked.append((view, request.question, options))
        per_job.append(order)
    replies = {"ask": ask_or_choose(agent.answerer, asked) if asked else [],
               "describe": caption_each(agent.answerer, [view for _, view in described]) if described else [],
               "detect": detect_each(agent.answerer, sought) if sought else []}
    return [[replies[which][i] for which, i in order] for order in per_job]


def ask(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """The questioner's Outcome (new sub-questions, or why none) per job."""
    return agent.questioner.ask([job.trace for job in jobs], sights_for(agent, "questioner", jobs))


def answer(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """The list of sub-answers (each a reply or a failure) of each job's current round; one
    asked of a region (``SubQA.box``) sees the search's best view instead of the whole picture."""
    counts = [len(job.trace.rounds[-1].sub_qas) for job in jobs]
    flat = answer_each(agent.answerer, [(job.focus if qa.box is not None and job.focus is not None else job.image,
                                         qa.question) for job in jobs for qa in job.trace.rounds[-1].sub_qas])
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return [flat[start : start + count] for start, count in zip(starts, counts)]


def judge(agent: IdealAgent, jobs: list[Job]) -> list[Any]:
    """(the reasoner's Outcome, the ``--votes`` Outcomes or None) per job."""
    traces, final = [job.trace for job in jobs], [job.trace.rounds[-1].forced for job in jobs]
    sights = sights_for(agent, "reasoner", jobs)
    verdicts = agent.reasoner.judge(traces, final, sights)
    votes = agent.settings.votes
    samples = agent.reasoner.vote(traces, final, votes, agent.settings.vote_temperature, sights) if votes else None
    return [(verdict, samples[i] if samples else None) for i, verdict in enumerate(verdicts)]


SPECS: dict[Step, StepSpec] = {
    Step.CAPTION: StepSpec(Step.CAPTION, lambda agent: agent.answerer, caption),
    Step.DIRECT: StepSpec(Step.DIRECT, lambda agent: agent.answerer, direct),
    Step.LOOK: StepSpec(Step.LOOK, lambda agent: agent.answerer, look),
    Step.ASK: StepSpec(Step.ASK, lambda agent: agent.questioner.caller.llm, ask),
    Step.ANSWER: StepSpec(Step.ANSWER, lambda agent: agent.answerer, answer),
    Step.JUDGE: StepSpec(Step.JUDGE, lambda agent: agent.reasoner.caller.llm, judge),
}


def run(agent: IdealAgent, step: Step, jobs: list[Job]) -> list[Any]:
    """``step``'s call for ``jobs``; a foreign error that means a service is down becomes ours."""
    try:
        return SPECS[step].call(agent, jobs)
    except Exception as exc:
        raise down_error(step, exc) from exc
