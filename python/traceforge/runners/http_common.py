"""HTTP plumbing shared by the server backends: streaming POSTs and one-line error messages."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import RequestFailed

_local = threading.local()


def _session() -> Any:
    import requests

    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        _local.session = session
    return session


@contextlib.contextmanager
def open_stream(
    url: str, body: dict[str, Any], timeout_s: float, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """POST ``body`` as JSON and yield the streaming response; network failures become RequestFailed.

    ``timeout_s`` bounds the connection and every wait for the next bytes, so a server that stops sending
    fails the request instead of holding the agent forever.
    """
    import requests

    try:
        resp = _session().post(
            url, json=body, stream=True, timeout=(min(timeout_s, 10.0), timeout_s), headers=headers
        )
    except requests.exceptions.ConnectionError as exc:
        text = str(exc)
        if "refused" in text.lower():
            raise RequestFailed(f"connection refused by {url} (is the server up?)") from exc
        raise RequestFailed(f"cannot connect to {url}: {_short(text)}") from exc
    except requests.exceptions.Timeout as exc:
        raise RequestFailed(f"no answer from {url} within {timeout_s:g} s") from exc
    except requests.exceptions.RequestException as exc:
        raise RequestFailed(f"request to {url} failed: {_short(str(exc))}") from exc
    try:
        yield resp
    except requests.exceptions.Timeout as exc:
        raise RequestFailed(f"{url} stopped sending for {timeout_s:g} s (request_timeout_s)") from exc
    except requests.exceptions.ConnectionError as exc:
        # requests reports a read timeout inside a stream as a ConnectionError wrapping ReadTimeoutError.
        if "timed out" in str(exc).lower():
            raise RequestFailed(f"{url} stopped sending for {timeout_s:g} s (request_timeout_s)") from exc
        raise RequestFailed(f"connection to {url} broke: {_short(str(exc))}") from exc
    except requests.exceptions.RequestException as exc:
        raise RequestFailed(f"stream from {url} failed: {_short(str(exc))}") from exc
    finally:
        resp.close()


def parse_json_line(text: str | bytes, url: str, lineno: int) -> dict[str, Any]:
    """One streamed JSON object (an NDJSON line or an SSE ``data:`` payload), or a clear error."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise RequestFailed(f"garbage from {url}: line {lineno} is not JSON: {text[:80]!r}") from exc
    if not isinstance(obj, dict):
        raise RequestFailed(f"garbage from {url}: line {lineno} is not a JSON object")
    return obj


def http_error(resp: Any, url: str) -> RequestFailed:
    """A RequestFailed for a non-200 answer, quoting the server's error message when it sent one."""
    detail = ""
    try:
        payload = resp.json()
        if isinstance(payload, dict):
            err = payload.get("error", payload.get("detail", payload.get("message")))
            if isinstance(err, dict):
                err = err.get("message", err)
            detail = str(err) if err is not None else ""
    except ValueError:
        detail = resp.text[:120]
    return RequestFailed(f"HTTP {resp.status_code} from {url}" + (f": {_short(detail)}" if detail else ""))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."
