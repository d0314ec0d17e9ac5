"""Exposures: secrets reported found (by `tether scan`, a partner, GitHub) are matched
against what Tether manages and ended."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from tether.api._access import Admitted
from tether.api._deps import Caller, Node, admission
from tether.api._routing import TetherRoute
from tether.auth import Forbidden
from tether.scan import Location, Reported, fingerprint_key
from tether.scan._exposures import classify
from tether.scan._github import answer, parse_alerts
from tether.scan._model import MAX_AUTHOR, MAX_FILE, MAX_SECRET

router = APIRouter(route_class=TetherRoute, tags=["exposures"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ReportedLocation(_Strict):
    file: Annotated[str, Field(min_length=1, max_length=MAX_FILE)]
    line: Annotated[int, Field(ge=0)] = 0
    column: Annotated[int, Field(ge=0)] = 0
    commit: Annotated[str | None, Field(max_length=64)] = None
    author: Annotated[str | None, Field(max_length=MAX_AUTHOR)] = None
    date: Annotated[str | None, Field(max_length=64)] = None


class ReportedSecret(_Strict):
    rule: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    secret: Annotated[str, Field(min_length=1, max_length=MAX_SECRET, repr=False)]
    location: ReportedLocation


class ExposuresRequest(_Strict):
    """Secrets found somewhere: each is matched, and (unless `respond` is false) what
    still works is revoked or rotated at once."""

    source: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")] = "scan"
    respond: bool = True
    secrets: Annotated[list[ReportedSecret], Field(min_length=1, max_length=2000)]


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema with its `$defs` written in place: an OpenAPI operation's
    schema cannot refer to definitions of its own."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@router.post(
    "/v1/exposures",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": _inlined(ExposuresRequest.model_json_schema())},
            }
        }
    },
)
async def post_exposures(
    request: Request, node: Node, admitted: Annotated[Admitted, Depends(admission)]
) -> JSONResponse:
    """Report found secrets: Tether's own format (`{source, respond, secrets: [{rule?,
    secret, location}]}`, an API token with the admin or exposure role), or a GitHub
    secret scanning alert (a JSON array of `{token, type, url, source}`, signed by
    GitHub: no bearer token). Answers `{findings: [...]}` (the `tether scan --format
    json` entries: no secret), or GitHub's `[{token_hash, token_type, label}]`."""
    body = await request.body()
    if admitted.principal is None:  # the access table admitted a signed partner alert
        await run_in_threadpool(node.github_keys.verify, body, request.headers)
        alerts = parse_alerts(body)
        reports = [
            Reported(classify(a.token), a.token, Location(a.url or a.source or "github", 0, 0))
            for a in alerts
        ]
        found = await run_in_threadpool(
            lambda: node.exposures.report(reports, source="github", actor="partner:github")
        )
        return JSONResponse(
            [answer(a, f.managed is not None) for a, f in zip(alerts, found, strict=True)]
        )
    caller = admitted.principal
    try:
        parsed = ExposuresRequest.model_validate_json(body)
    except ValidationError as exc:
        # Without the inputs: a rejected field may be a secret.
        raise RequestValidationError(exc.errors(include_input=False)) from None
    if not parsed.respond and not caller.is_admin:
        # A dry run would answer "is this value managed?" and end nothing: a way to test
        # guesses of static secrets. A real report ends what it matches.
        raise Forbidden("a dry run (respond: false) needs the admin role")
    reports = [
        Reported(
            s.rule or classify(s.secret),
            s.secret,
            Location(**s.location.model_dump()),
        )
        for s in parsed.secrets
    ]
    found = await run_in_threadpool(
        lambda: node.exposures.report(
            reports, source=parsed.source, actor=caller.actor, respond=parsed.respond
        )
    )
    return JSONResponse({"findings": [f.to_json() for f in found]})


@router.get("/v1/exposures/key")
def exposures_key(caller: Caller, node: Node) -> JSONResponse:
    """The key `tether scan` fingerprints found secrets with, so that its reports and
    baselines carry the same fingerprints as the server's (never a stored hash's key)."""
    key = fingerprint_key(node.barrier.token_key())
    return JSONResponse({"key": key.hex()}, headers={"Cache-Control": "no-store"})
