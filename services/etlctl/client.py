"""The API over HTTP for the CLI: bearer tokens, JSON answers, and each failure as an exit code a script can test."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

# Exit codes (docs/operations.md): 0 done; 1 the thing asked for failed (a run failed, a check failed);
# 2 bad usage (Click); the rest from the API's answer.
OK, FAILED, USAGE, NOT_FOUND, CONFLICT, REFUSED, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
_BY_STATUS = {404: NOT_FOUND, 409: CONFLICT, 401: REFUSED, 403: REFUSED, 422: USAGE, 400: USAGE}


class ApiError(Exception):
    """The API answered an error, or could not be reached; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Api:
    """The API at ``url`` with the read token and, for operator actions, the operator token."""

    url: str
    token: str | None = None
    operator_token: str | None = None
    timeout_s: float = 30.0

    def _client(self, operator: bool) -> httpx.Client:
        # Without an operator token the read token goes: the API then says why it refuses (403).
        token = (self.operator_token or self.token) if operator else self.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s)

    def request(self, method: str, path: str, operator: bool = False, **kwargs: Any) -> Any:
        """The JSON answer of a 2xx; ApiError with the API's ``detail`` and an exit code otherwise."""
        with self._client(operator) as client:
            try:
                resp = client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ApiError(f"cannot reach the API at {self.url}: {exc} (set ETL_API_URL?)", UNAVAILABLE) from exc
            _raise_for(resp, operator)
            return resp.json()

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with the query parameters that are not None."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    @contextmanager
    def download(self, path: str, params: dict[str, Any]) -> Iterator[httpx.Response]:
        """A streamed GET (exports), checked before the caller reads its body."""
        with self._client(False) as client:
            try:
                with client.stream("GET", path, params={k: v for k, v in params.items() if v is not None}) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp, False)
                    yield resp
            except httpx.HTTPError as exc:
                raise ApiError(f"cannot reach the API at {self.url}: {exc}", UNAVAILABLE) from exc


def _raise_for(resp: httpx.Response, operator: bool) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if not isinstance(detail, str):
        detail = str(detail)
    hint = ""
    if resp.status_code in (401, 403) and operator:
        hint = " (set ETL_API_OPERATOR_TOKEN or --operator-token)"
    elif resp.status_code == 401:
        hint = " (set ETL_API_TOKEN or --token)"
    code = _BY_STATUS.get(resp.status_code, UNAVAILABLE if resp.status_code >= 500 else FAILED)
    raise ApiError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {detail}{hint}", code)
