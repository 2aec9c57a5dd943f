"""Stored scenarios (as Callr Actions' are): a named YAML script holding call flow verbs per branch, run by
the softswitch itself with no application to fetch from.

```yaml
branches:
  inbound-call:          # an inbound call whose route says to = "scenario:NAME"
    - verb: say
      text: Thanks for calling.
    - verb: gather
      num_digits: 1
      action: https://app.example/menu      # actions and redirects may still fetch from an application
      prompt:
        - {verb: say, text: Press 1 for sales.}
  api-initiated:         # a call placed with POST /v2/scenarios/{id}/start
    - {verb: say, text: This is a reminder of your appointment tomorrow.}
    - {verb: hangup}
```

The verbs are the JSON verbs (softswitch.flows.verbs), one list per branch. A scenario is validated when
saved: a YAML error or a verb that does not validate is refused with the line and column it is on.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
import yaml

from softswitch.config import SCENARIO_NAME
from softswitch.flows.verbs import Instructions, Verb

NAME = SCENARIO_NAME  # what `[[routes]] to = "scenario:NAME"` may name
MAX_BYTES = 256 * 1024
BRANCHES = ("inbound-call", "api-initiated")


class Branches(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    inbound_call: Instructions | None = msgspec.field(default=None, name="inbound-call")
    api_initiated: Instructions | None = msgspec.field(default=None, name="api-initiated")


class Script(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    branches: Branches


class ScenarioError(Exception):
    """A scenario that cannot be saved: what is wrong and where (`line`, `column`: 1-based, 0 if unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message)
        self.reason, self.line, self.column = message, line, column


def parse(text: str) -> Script:
    """The scenario in `text` (YAML), validated; ScenarioError with the line of the first problem."""
    if len(text.encode()) > MAX_BYTES:
        raise ScenarioError(f"scenario larger than {MAX_BYTES // 1024} kB")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ScenarioError(f"not valid YAML: {exc.problem}", mark.line + 1 if mark else 0,
                            mark.column + 1 if mark else 0) from None  # fmt: skip
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}") from None
    try:
        script = msgspec.convert(data, Script)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = message.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in message else "$"
        unknown = re.search(r"unknown field `([^`]+)`", message)
        line, column = _position(node, path + (f".{unknown[1]}" if unknown else ""))  # the field's own line
        raise ScenarioError(message.split(" - at `", 1)[0] + f" (at {path})", line, column) from None
    if script.branches.inbound_call is None and script.branches.api_initiated is None:
        raise ScenarioError(f"branches: needs {BRANCHES[0]} or {BRANCHES[1]}", *_position(node, "$.branches"))
    return script


def branch(script: Script, name: Literal["inbound-call", "api-initiated"]) -> list[Verb] | None:
    return script.branches.inbound_call if name == "inbound-call" else script.branches.api_initiated


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _position(node: yaml.Node | None, path: str) -> tuple[int, int]:
    """The line and column (1-based) of the deepest node of `path` (msgspec's `$.a.b[2].c`) that exists."""
    best = node  # a field is placed at its key, a list item at its start
    for key, index in _STEP.findall(path.removeprefix("$")):
        if node is None:
            break
        child = mark = None
        if key and isinstance(node, yaml.MappingNode):
            mark, child = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), (None, None))
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            mark = child = node.value[int(index)]
        node = child
        best = mark or best
    if best is None:
        return 0, 0
    return best.start_mark.line + 1, best.start_mark.column + 1


ScenarioName = Annotated[str, msgspec.Meta(pattern=NAME.pattern, description="letters, digits, . _ -")]
