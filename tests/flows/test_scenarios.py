"""Stored scenarios: the YAML script read into verbs per branch, and every refusal naming its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.flows.scenarios import ScenarioError, branch, parse
from softswitch.flows.verbs import Gather, Hangup, Say

SCRIPT = """branches:
  inbound-call:
    - verb: say
      text: Thanks for calling.
    - verb: gather
      num_digits: 1
      prompt:
        - {verb: say, text: Press 1.}
  api-initiated:
    - {verb: say, text: Reminder.}
    - {verb: hangup}
"""


def test_scenario_branches_become_verbs():
    script = parse(SCRIPT)
    inbound = branch(script, "inbound-call")
    assert inbound[0] == Say(text="Thanks for calling.") and isinstance(inbound[1], Gather)
    assert inbound[1].prompt == [Say(text="Press 1.")]
    assert branch(script, "api-initiated") == [Say(text="Reminder."), Hangup()]
    assert branch(parse("branches:\n  api-initiated: [{verb: hangup}]\n"), "inbound-call") is None


@pytest.mark.parametrize(
    ("text", "line", "column", "why"),
    [
        (SCRIPT.replace("num_digits: 1", "num_digits: one"), 6, 7, "Expected `int | null`, got `str`"),
        (SCRIPT.replace("text: Reminder.", "txt: Reminder."), 10, 19, "unknown field `txt`"),
        (SCRIPT.replace("verb: hangup", "verb: dance"), 11, 8, "Invalid value 'dance'"),
        (SCRIPT.replace("    - verb: say\n      text: Thanks", "    - verb: say\n     text: Thanks"), 4, 6, "YAML"),
        ("branches: {}\n", 1, 1, "needs inbound-call or api-initiated"),
        ("steps: []\n", 1, 1, "unknown field `steps`"),
        ("- just a list\n", 1, 1, "Expected `object`"),
    ],
)
def test_scenario_errors_name_the_line(text, line, column, why):
    with pytest.raises(ScenarioError) as refused:
        parse(text)
    assert (refused.value.line, refused.value.column) == (line, column) and why in str(refused.value)
    assert str(refused.value).startswith(f"line {line}, column {column}: ")


def test_scenario_size_is_bounded():
    with pytest.raises(ScenarioError, match="larger than"):
        parse("branches:\n  api-initiated: []\n" + "#" * 300_000)


def test_the_example_scenario_is_valid():
    script = parse((Path(__file__).resolve().parents[2] / "examples" / "scenario.yaml").read_text())
    assert branch(script, "inbound-call") and branch(script, "api-initiated")
