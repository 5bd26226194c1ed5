"""One settings model: defaults, checks, the trace record, the fingerprint and the flags."""

from __future__ import annotations

import pytest

from idealagent import IdealAgent
from idealagent.errors import InputError
from idealagent.presets import preset_settings
from idealagent.settings import FIELD_FLAGS, AgentSettings
from idealagent.testing import ScriptedAnswerer, ScriptedChatModel


def test_the_agent_takes_its_defaults_and_checks_from_the_model():
    agent = IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), max_rounds=2)
    assert agent.settings == AgentSettings(max_rounds=2)
    assert agent.max_rounds == 2 and agent.confidence_threshold == AgentSettings().confidence_threshold
    assert agent.record == AgentSettings(max_rounds=2).record()
    assert IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), settings=AgentSettings(batch_size=3)).batch_size == 3


@pytest.mark.parametrize(("values", "says"), [
    ({"confidence_threshold": 1.5}, "confidence_threshold: input should be less than or equal to 1, got 1.5"),
    ({"max_sub_questions": 0}, "max_sub_questions: input should be greater than or equal to 1, got 0"),
    ({"structured": "maybe"}, "structured: input should be 'auto', 'on' or 'off', got 'maybe'"),
    ({"calibration": "nofile"}, "calibration: no calibration file nofile"),
    ({"max_round": 2}, "unknown agent setting(s): max_round; known: max_rounds, "),
])
def test_a_bad_setting_is_one_line_naming_it(values, says):
    with pytest.raises(InputError) as caught:
        AgentSettings.of(**values)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError):
        IdealAgent(ScriptedChatModel(), ScriptedAnswerer(), **values)


def test_none_means_the_default_and_replace_checks_again():
    assert AgentSettings.of(max_rounds=None) == AgentSettings()
    assert AgentSettings().replace(max_rounds=5).max_rounds == 5
    with pytest.raises(InputError):
        AgentSettings().replace(max_rounds=0)


def test_the_fingerprint_has_what_changes_answers_and_not_the_speed_knobs():
    fingerprint = AgentSettings(batch_size=32, infra_retries=0).fingerprint()
    assert fingerprint == {"max_rounds": 3, "confidence_threshold": 0.7, "max_sub_questions": 3,
                           "attempts": 3, "structured": "auto", "direct_answer": True,
                           "zoom": "auto", "look_budget": 9, "look_mode": "auto", "roles_see": "auto",
                           "option_scoring": "letter",
                           "calibration": {"method": "default", "fits": {}, "fitted_on": {}, "rounds": {}},
                           "votes": 0, "vote_temperature": 0.7}
    assert set(AgentSettings().record()) == set(AgentSettings.model_fields)


def test_presets_override_the_defaults_and_the_user_overrides_the_preset():
    assert preset_settings("tiny").max_sub_questions == 2  # the tiny preset's own value
    assert preset_settings("tiny", max_sub_questions=4, max_rounds=None).max_sub_questions == 4


def test_every_flag_names_a_setting():
    assert FIELD_FLAGS == {"max_rounds": "--max-rounds", "confidence_threshold": "--threshold",
                           "max_sub_questions": "--max-sub-questions", "structured": "--structured",
                           "direct_answer": "--direct-answer/--no-direct-answer", "zoom": "--zoom",
                           "look_budget": "--look-budget", "look_mode": "--look-mode", "roles_see": "--roles-see",
                           "option_scoring": "--scoring", "calibration": "--calibration",
                           "votes": "--votes", "vote_temperature": "--vote-temperature",
                           "cache": "--cache/--no-cache"}
