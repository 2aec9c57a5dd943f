"""`/v2/scenarios`: stored call flow scripts (YAML, softswitch.flows.scenarios), like Callr Actions'. Saved
only when valid (422 naming the line otherwise); `inbound-call` runs for routes `to = "scenario:NAME"`,
`api-initiated` for calls placed with `POST /v2/scenarios/{id}/start`. Test keys' scenarios are apart from
live ones (routes run live ones)."""

from __future__ import annotations

import sqlite3
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from api.calls import PARTY, Call, CreateCall, MachineDetectionConfig, call_object, place_call
from api.http import (
    CLOCK,
    STORE,
    ApiError,
    Page,
    PageQuery,
    RouteTable,
    Timestamp,
    current_key,
    decode_body,
    decode_query,
    json_response,
    paginate,
    require_cursor,
    timestamp,
)
from softswitch.events import new_id
from softswitch.flows.scenarios import BRANCHES, ScenarioError, ScenarioName, branch, parse
from softswitch.store import ScenarioRecord

routes = RouteTable()
TAGS = ["scenarios"]
ScriptText = Annotated[str, msgspec.Meta(max_length=256 * 1024, description="the YAML script")]


class Scenario(msgspec.Struct, kw_only=True):
    id: str
    object: str = "scenario"
    name: str
    script: str
    branches: Annotated[list[str], msgspec.Meta(description="the branches it has")]
    created_at: Timestamp
    updated_at: Timestamp


class CreateScenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ScenarioName
    script: ScriptText


class UpdateScenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ScenarioName | None = None
    script: ScriptText | None = None


class StartScenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The call to place; once answered it runs the scenario's api-initiated branch."""

    to: Annotated[str, msgspec.Meta(pattern=PARTY)]
    from_: Annotated[str, msgspec.Meta(pattern=PARTY)] = msgspec.field(name="from")
    timeout: Annotated[int, msgspec.Meta(ge=1, le=600)] = 60
    machine_detection: Literal["off", "detect", "detect_beep"] = "off"
    machine_detection_config: MachineDetectionConfig | None = None


def scenario_object(rec: ScenarioRecord) -> Scenario:
    script = parse(rec.script)
    names = [name for name in BRANCHES if branch(script, name) is not None]
    return Scenario(
        id=rec.id,
        name=rec.name,
        script=rec.script,
        branches=names,
        created_at=timestamp(rec.created_at),
        updated_at=timestamp(rec.updated_at),
    )


def _validate(script: str) -> None:
    try:
        parse(script)
    except ScenarioError as exc:
        raise ApiError(422, "invalid_param", f"script: {exc}", [("script", str(exc))]) from None


def _scenario(request: web.Request) -> ScenarioRecord:
    rec = request.app[STORE].get_scenario(request.match_info["id"])
    if rec is None or rec.test != current_key(request).test:
        raise ApiError(404, "not_found", f"no scenario {request.match_info['id']}")
    return rec


def _save(request: web.Request, rec: ScenarioRecord) -> None:
    try:
        request.app[STORE].save_scenario(rec)
    except sqlite3.IntegrityError:
        raise ApiError(409, "conflict", f"a scenario named {rec.name!r} exists", [("name", "taken")]) from None


@routes.route(
    "POST", "/v2/scenarios", scope="calls:write", body=CreateScenario, response=Scenario, status=201,
    summary="Save a scenario", tags=TAGS,
)  # fmt: skip
async def create_scenario(request: web.Request) -> web.Response:
    """Validated first: a YAML error or a verb that does not validate is a 422 naming its line."""
    body = await decode_body(request, CreateScenario)
    _validate(body.script)
    now = request.app[CLOCK]()
    rec = ScenarioRecord(new_id("scn"), body.name, body.script, current_key(request).test, now, now)
    _save(request, rec)
    return json_response(scenario_object(rec), status=201, headers={"Location": f"/v2/scenarios/{rec.id}"})


@routes.route(
    "GET", "/v2/scenarios", scope="calls:read", query=PageQuery, response=Page[Scenario],
    summary="List scenarios", tags=TAGS,
)  # fmt: skip
async def list_scenarios(request: web.Request) -> web.Response:
    q = decode_query(request, PageQuery)
    store, test = request.app[STORE], current_key(request).test
    if q.starting_after is not None:
        cursor = store.get_scenario(q.starting_after)
        require_cursor(cursor is not None and cursor.test == test, q.starting_after, "scenario")
    rows = store.list_scenarios(limit=q.limit + 1, test=test, starting_after=q.starting_after)
    return json_response(paginate([scenario_object(r) for r in rows], q.limit))


@routes.route("GET", "/v2/scenarios/{id}", scope="calls:read", response=Scenario, summary="Get a scenario", tags=TAGS)
async def get_scenario(request: web.Request) -> web.Response:
    return json_response(scenario_object(_scenario(request)))


@routes.route(
    "PATCH", "/v2/scenarios/{id}", scope="calls:write", body=UpdateScenario, response=Scenario,
    summary="Change a scenario", tags=TAGS,
)  # fmt: skip
async def update_scenario(request: web.Request) -> web.Response:
    rec = _scenario(request)
    body = await decode_body(request, UpdateScenario)
    if body.script is not None:
        _validate(body.script)
        rec.script = body.script
    if body.name is not None:
        rec.name = body.name
    rec.updated_at = request.app[CLOCK]()
    _save(request, rec)
    return json_response(scenario_object(rec))


@routes.route("DELETE", "/v2/scenarios/{id}", scope="calls:write", summary="Delete a scenario", tags=TAGS)
async def delete_scenario(request: web.Request) -> web.Response:
    rec = _scenario(request)
    request.app[STORE].delete_scenario(rec.id)
    return json_response({"id": rec.id, "object": "scenario", "deleted": True})


@routes.route(
    "POST", "/v2/scenarios/{id}/start", scope="calls:write", body=StartScenario, response=Call, status=201,
    summary="Place a call that runs the scenario's api-initiated branch", tags=TAGS,
)  # fmt: skip
async def start_scenario(request: web.Request) -> web.Response:
    rec = _scenario(request)
    body = await decode_body(request, StartScenario)
    verbs = branch(parse(rec.script), "api-initiated")
    if verbs is None:
        raise ApiError(409, "conflict", f"scenario {rec.name} has no api-initiated branch")
    spec = CreateCall(
        to=body.to,
        from_=body.from_,
        timeout=body.timeout,
        machine_detection=body.machine_detection,
        machine_detection_config=body.machine_detection_config,
    )
    call = place_call(request, spec, verbs=verbs)
    call.record.data["scenario"] = rec.id
    return json_response(call_object(call.record), status=201, headers={"Location": f"/v2/calls/{call.id}"})
