"""OpenID AuthZEN Authorization API 1.0: Tether as a policy decision point (tether.authzen).

`POST /access/v1/evaluation`, `/access/v1/evaluations` (boxcarring, with the three
evaluation semantics), `/access/v1/search/{subject,resource,action}` (paged with opaque
tokens) and the metadata at `GET /.well-known/authzen-configuration`. A deny is a 200
with `{"decision": false}`; a missing subject, action or resource is a 400; unknown
fields are ignored; `X-Request-ID` is echoed by the gate. Callers are API tokens with
the role `pdp:<application>` (or `pdp`), admitted by the access table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tether._internal.problems import request_problems
from tether.api._deps import Node
from tether.api._routing import TetherRoute, in_hot_thread
from tether.authzen import (
    EXECUTE_ALL,
    SEMANTICS,
    Action,
    BadEvaluationRequest,
    Evaluation,
    Party,
    PdpForbidden,
    Search,
    Verdict,
    failed,
)

router = APIRouter(route_class=TetherRoute, tags=["authzen"])

#: Evaluations in one boxcarred request.
MAX_EVALUATIONS = 1000
_TYPE = Field(min_length=1, max_length=256)
_ID = Field(min_length=1, max_length=1024)


class _Loose(BaseModel):
    """AuthZEN's forward compatibility: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


class SubjectIn(_Loose):
    type: str = _TYPE
    id: str = _ID
    properties: dict[str, Any] = Field(default_factory=dict)


class ResourceIn(SubjectIn):
    pass


class ActionIn(_Loose):
    name: str = _ID
    properties: dict[str, Any] = Field(default_factory=dict)


class EvaluationIn(_Loose):
    subject: SubjectIn
    action: ActionIn
    resource: ResourceIn
    context: dict[str, Any] = Field(default_factory=dict)


class OptionsIn(_Loose):
    evaluations_semantic: str = EXECUTE_ALL


class EvaluationsIn(_Loose):
    """Top-level subject, action, resource and context are defaults for each item."""

    subject: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    resource: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    evaluations: list[Any] | None = Field(default=None, max_length=MAX_EVALUATIONS)
    options: OptionsIn = Field(default_factory=OptionsIn)


class SearchedIn(_Loose):
    """The entity searched for: its type; an id is ignored."""

    type: str = _TYPE
    id: str | None = Field(default=None, max_length=1024)


class PageIn(_Loose):
    token: str | None = Field(default=None, max_length=512)
    limit: int | None = Field(default=None, ge=0)


class SubjectSearchIn(_Loose):
    subject: SearchedIn
    action: ActionIn
    resource: ResourceIn
    context: dict[str, Any] = Field(default_factory=dict)
    page: PageIn = Field(default_factory=PageIn)


class ResourceSearchIn(_Loose):
    subject: SubjectIn
    action: ActionIn
    resource: SearchedIn
    context: dict[str, Any] = Field(default_factory=dict)
    page: PageIn = Field(default_factory=PageIn)


class ActionSearchIn(_Loose):
    subject: SubjectIn
    resource: ResourceIn
    context: dict[str, Any] = Field(default_factory=dict)
    page: PageIn = Field(default_factory=PageIn)


# -- responses (for the OpenAPI document; the endpoints answer JSON they build) --


class DecisionOut(BaseModel):
    decision: bool
    context: dict[str, Any] | None = None


class EvaluationsOut(BaseModel):
    evaluations: list[DecisionOut] | None = None
    decision: bool | None = None
    context: dict[str, Any] | None = None


class PageOut(BaseModel):
    next_token: str
    count: int


class SearchOut(BaseModel):
    page: PageOut
    results: list[dict[str, str]]


class MetadataOut(BaseModel):
    policy_decision_point: str
    access_evaluation_endpoint: str
    access_evaluations_endpoint: str
    search_subject_endpoint: str
    search_resource_endpoint: str
    search_action_endpoint: str


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` put in place (OpenAPI has no `$defs`)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(n) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return resolve(defs[ref.removeprefix("#/$defs/")])
        return {k: resolve(v) for k, v in node.items()}

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(model)}},
        }
    }


def _problem(exc: ValidationError, where: str = "") -> str:
    problems = request_problems(exc.errors()[:20])
    prefix = f"{where}." if where else ""
    return "; ".join(f"{prefix}{p['path']}: {p['message']}" for p in problems[:5])


def _validate(model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise BadEvaluationRequest(f"invalid request: {_problem(exc)}") from None


def _party(given: SubjectIn | ResourceIn) -> Party:
    return Party(given.type, given.id, given.properties)


def _evaluation(given: EvaluationIn) -> Evaluation:
    return Evaluation(
        _party(given.subject),
        Action(given.action.name, given.action.properties),
        _party(given.resource),
        given.context,
    )


def _fast_party(value: Any) -> Party | None:
    """A well-formed subject or resource read without the validator (the hot path); None
    sends it to the validator, which says what is wrong. The same rules as SubjectIn."""
    if type(value) is not dict:
        return None
    type_, id_, properties = value.get("type"), value.get("id"), value.get("properties", {})
    if (
        type(type_) is str
        and type(id_) is str
        and type(properties) is dict
        and 0 < len(type_) <= 256
        and 0 < len(id_) <= 1024
    ):
        return Party(type_, id_, properties)
    return None


def _fast_evaluation(value: Mapping[str, Any]) -> Evaluation | None:
    subject, resource = _fast_party(value.get("subject")), _fast_party(value.get("resource"))
    action, context = value.get("action"), value.get("context", {})
    if subject is None or resource is None or type(action) is not dict or type(context) is not dict:
        return None
    name, properties = action.get("name"), action.get("properties", {})
    if type(name) is not str or not 0 < len(name) <= 1024 or type(properties) is not dict:
        return None
    return Evaluation(subject, Action(name, properties), resource, context)


def _read_evaluation(value: Mapping[str, Any]) -> Evaluation:
    """The evaluation a request (or a merged item) asks for; a 400 naming what is wrong."""
    fast = _fast_evaluation(value)
    return fast if fast is not None else _evaluation(_validate(EvaluationIn, value))


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise BadEvaluationRequest("the body must be a JSON object")
    return body


def _caller(request: Request) -> tuple[str, str]:
    """(the application the caller's token evaluates against, the caller's actor)."""
    principal = request.state.admitted.principal
    if principal is None:  # the table admits only API tokens here
        raise PdpForbidden("this needs an API token with the role pdp or pdp:<application>")
    application: str = request.app.state.node.pdp.application_for(principal.roles)
    return application, principal.actor


#: Served beneath the framework (`tether.api._routing.HotRoutes`).
HOT_PATHS = {("POST", "/access/v1/evaluation"), ("POST", "/access/v1/evaluations")}


@router.post(
    "/access/v1/evaluation",
    openapi_extra=_body(EvaluationIn),
    response_model=DecisionOut,
    summary="AuthZEN Access Evaluation",
)
async def evaluation(request: Request) -> JSONResponse:
    application, actor = _caller(request)
    asked = _read_evaluation(await _json_object(request))
    # In memory and bounded: decided on the loop, with no thread hop.
    verdict = request.app.state.node.pdp.evaluate(application, asked, actor)
    return JSONResponse(verdict.to_json())


def _merged(item: Any, defaults: Mapping[str, Any], index: int) -> Evaluation | Verdict:
    """One boxcarred item with the top-level defaults; a bad item is a deny, not an error."""
    if not isinstance(item, dict):
        return failed(400, f"evaluations[{index}]: must be an object")
    merged = {
        k: item[k] if k in item else defaults.get(k) for k in ("subject", "action", "resource")
    }
    context = item.get("context", defaults.get("context"))
    if context is not None:
        merged["context"] = context
    merged = {k: v for k, v in merged.items() if v is not None}
    fast = _fast_evaluation(merged)
    if fast is not None:
        return fast
    try:
        return _evaluation(EvaluationIn.model_validate(merged))
    except ValidationError as exc:
        return failed(400, _problem(exc, f"evaluations[{index}]"))


@router.post(
    "/access/v1/evaluations",
    openapi_extra=_body(EvaluationsIn),
    response_model=EvaluationsOut,
    summary="AuthZEN Access Evaluations (boxcarring)",
)
async def evaluations(request: Request) -> JSONResponse:
    application, actor = _caller(request)
    body = await _json_object(request)
    given: EvaluationsIn = _validate(EvaluationsIn, body)
    semantic = given.options.evaluations_semantic
    if semantic not in SEMANTICS:
        raise BadEvaluationRequest(
            f"options.evaluations_semantic must be one of: {', '.join(SEMANTICS)}"
        )
    pdp = request.app.state.node.pdp
    if not given.evaluations:
        # No (or an empty) `evaluations`: the single evaluation request, answered as one.
        one = _read_evaluation(body)
        return JSONResponse(pdp.evaluate(application, one, actor).to_json())
    defaults = {k: body.get(k) for k in ("subject", "action", "resource", "context")}
    items = [_merged(item, defaults, i) for i, item in enumerate(given.evaluations)]
    verdicts = await in_hot_thread(pdp.evaluate_batch, application, items, actor, semantic)
    return JSONResponse({"evaluations": [v.to_json() for v in verdicts]})


async def _search(request: Request, caller: tuple[str, str], search: Search) -> JSONResponse:
    application, actor = caller
    page = await in_hot_thread(request.app.state.node.pdp.search, application, search, actor)
    if search.kind == "action":
        results = [{"name": name} for name in page.results]
    else:
        searched = search.subject if search.kind == "subject" else search.resource
        results = [{"type": searched.type, "id": found} for found in page.results]
    return JSONResponse(
        {"page": {"next_token": page.next_token, "count": len(results)}, "results": results}
    )


@router.post(
    "/access/v1/search/subject",
    openapi_extra=_body(SubjectSearchIn),
    response_model=SearchOut,
    summary="AuthZEN Subject Search",
)
async def search_subject(request: Request) -> JSONResponse:
    caller = _caller(request)
    given: SubjectSearchIn = _validate(SubjectSearchIn, await _json_object(request))
    return await _search(
        request,
        caller,
        Search(
            "subject",
            Party(given.subject.type, ""),
            _party(given.resource),
            Action(given.action.name, given.action.properties),
            given.context,
            given.page.token,
            given.page.limit,
        ),
    )


@router.post(
    "/access/v1/search/resource",
    openapi_extra=_body(ResourceSearchIn),
    response_model=SearchOut,
    summary="AuthZEN Resource Search",
)
async def search_resource(request: Request) -> JSONResponse:
    caller = _caller(request)
    given: ResourceSearchIn = _validate(ResourceSearchIn, await _json_object(request))
    return await _search(
        request,
        caller,
        Search(
            "resource",
            _party(given.subject),
            Party(given.resource.type, ""),
            Action(given.action.name, given.action.properties),
            given.context,
            given.page.token,
            given.page.limit,
        ),
    )


@router.post(
    "/access/v1/search/action",
    openapi_extra=_body(ActionSearchIn),
    response_model=SearchOut,
    summary="AuthZEN Action Search",
)
async def search_action(request: Request) -> JSONResponse:
    caller = _caller(request)
    given: ActionSearchIn = _validate(ActionSearchIn, await _json_object(request))
    return await _search(
        request,
        caller,
        Search(
            "action",
            _party(given.subject),
            _party(given.resource),
            None,
            given.context,
            given.page.token,
            given.page.limit,
        ),
    )


@router.get(
    "/.well-known/authzen-configuration",
    response_model=MetadataOut,
    summary="AuthZEN Policy Decision Point metadata",
)
def metadata(node: Node) -> dict[str, Any]:
    base = node.settings.issuer_url.rstrip("/")
    return {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        "search_subject_endpoint": f"{base}/access/v1/search/subject",
        "search_resource_endpoint": f"{base}/access/v1/search/resource",
        "search_action_endpoint": f"{base}/access/v1/search/action",
    }
