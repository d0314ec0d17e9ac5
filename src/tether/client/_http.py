from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

from tether.config import DEFAULT_LISTEN
from tether.errors import TetherError


class ClientError(TetherError):
    """An API call failed. `problems` lists field errors when the server named them."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        code: str = "client_error",
        problems: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.problems = problems or []


class TetherClient:
    def __init__(
        self, addr: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.addr = (addr or os.environ.get("TETHER_ADDR") or f"http://{DEFAULT_LISTEN}").rstrip(
            "/"
        )
        if "://" not in self.addr:
            self.addr = "http://" + self.addr
        self._token = token if token is not None else os.environ.get("TETHER_TOKEN")
        headers = {"user-agent": "tether-client"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        self._http = httpx.Client(base_url=self.addr, headers=headers, timeout=timeout)

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"TetherClient(addr={self.addr!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TetherClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach Tether at {self.addr}: is `tether serve` (or `tether dev`) running?"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.addr} failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def stream_lines(self, path: str) -> Iterator[str]:
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                yield from response.iter_lines()
        except httpx.ConnectError:
            raise ClientError(f"cannot reach Tether at {self.addr}") from None

    # -- convenience --
    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params or None)


def _error_from(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
        message = body.get("message") or body.get("error_description") or body.get("error")
        return ClientError(
            str(message),
            response.status_code,
            str(body.get("error", "error")),
            body.get("problems"),
        )
    except ValueError:
        return ClientError(f"HTTP {response.status_code} from server", response.status_code)
