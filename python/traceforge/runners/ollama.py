"""Ollama backend: ``/api/generate`` and ``/api/chat`` with streaming (NDJSON, one JSON object per line).

Ollama's final line (``"done": true``) carries its own counts and durations (``prompt_eval_count``,
``prompt_eval_duration``, ``eval_count``, ``eval_duration``, nanoseconds): they are recorded beside our own
wall-clock timings, and ``eval_count`` is the output token count.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .http_common import RequestFailed, http_error, open_stream, parse_json_line


class OllamaBackend:
    """Client of one Ollama server, shared by the agent threads of a cell."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: str = "generate",
        options: dict[str, Any] | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        timeout_s: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.options = dict(options or {})
        self.temperature = temperature
        self.seed = seed
        self.timeout_s = timeout_s

    def request(self, prompt: str, max_new_tokens: int, progress: Callable[[], None]) -> dict[str, Any]:
        """Send one streaming request; return the request's measurements or raise :class:`RequestFailed`."""
        options = {"num_predict": max_new_tokens, "temperature": self.temperature, "seed": self.seed}
        options.update(self.options)
        if self.api == "chat":
            url = f"{self.base_url}/api/chat"
            body: dict[str, Any] = {
                "model": self.model,
                "stream": True,
                "options": options,
                "messages": [{"role": "user", "content": prompt}],
            }
        else:
            url = f"{self.base_url}/api/generate"
            body = {"model": self.model, "prompt": prompt, "stream": True, "options": options}
        t0 = time.perf_counter()
        ttft = None
        chunks = 0
        final: dict[str, Any] | None = None
        with open_stream(url, body, self.timeout_s) as resp:
            if resp.status_code != 200:
                raise http_error(resp, url)
            for lineno, raw in enumerate(resp.iter_lines(), start=1):
                if not raw:
                    continue
                obj = parse_json_line(raw, url, lineno)
                if "error" in obj:
                    raise RequestFailed(f"ollama error: {obj['error']}")
                piece = obj.get("message", {}).get("content") if self.api == "chat" else obj.get("response")
                if piece is None and not obj.get("done"):
                    raise RequestFailed(
                        f"garbage from {url}: line {lineno} has no "
                        f"{'message.content' if self.api == 'chat' else 'response'}"
                    )
                if piece:
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    progress()
                if obj.get("done"):
                    final = obj
                    break
        wall = time.perf_counter() - t0
        if final is None:
            raise RequestFailed(f'stream from {url} ended without a final "done": true line')
        output = final.get("eval_count", chunks)
        return {
            "wall_s": wall,
            "ttft_s": ttft,
            "output_tokens": output,
            "prompt_tokens": final.get("prompt_eval_count"),
            "eval_count": final.get("eval_count"),
            "eval_duration_ns": final.get("eval_duration"),
            "prompt_eval_count": final.get("prompt_eval_count"),
            "prompt_eval_duration_ns": final.get("prompt_eval_duration"),
            "finish_reason": final.get("done_reason"),
        }
