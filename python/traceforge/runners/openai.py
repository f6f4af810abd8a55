"""OpenAI-compatible backend: ``/v1/completions`` and ``/v1/chat/completions`` with SSE streaming.

vLLM, SGLang, TGI and llama.cpp's server all speak this protocol with small differences, handled through the
presets in :data:`traceforge.runners.spec.PRESETS`: whether ``stream_options.include_usage`` yields a final
usage chunk, which extra keys pin the output length (``ignore_eos``, ``min_tokens``), and TGI's fixed model
name. The output token count is the server's ``usage.completion_tokens`` when it reports one, else the
number of content chunks (one token each on these servers).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from .http_common import RequestFailed, http_error, open_stream, parse_json_line
from .spec import PRESETS


class OpenAIBackend:
    """Client of one OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: str = "completions",
        preset: str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        timeout_s: float = 300.0,
        options: dict[str, Any] | None = None,
        api_key_env: str | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.quirks = PRESETS.get(preset or "", {"stream_usage": True, "extra": {}, "min_tokens": False})
        self.model = self.quirks.get("model_override", model)
        self.api = api
        self.temperature = temperature
        self.seed = seed
        self.timeout_s = timeout_s
        self.options = dict(options or {})
        key = os.environ.get(api_key_env) if api_key_env else None
        self.headers = {"Authorization": f"Bearer {key}"} if key else None

    def request(self, prompt: str, max_new_tokens: int, progress: Callable[[], None]) -> dict[str, Any]:
        """Send one streaming request; return the request's measurements or raise :class:`RequestFailed`."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "stream": True,
            "temperature": self.temperature,
            "seed": self.seed,
        }
        if self.api == "chat":
            url = f"{self.base_url}/v1/chat/completions"
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            url = f"{self.base_url}/v1/completions"
            body["prompt"] = prompt
        if self.quirks.get("stream_usage"):
            body["stream_options"] = {"include_usage": True}
        body.update(self.quirks.get("extra", {}))
        if self.quirks.get("min_tokens"):
            body["min_tokens"] = max_new_tokens
        body.update(self.options)
        t0 = time.perf_counter()
        ttft = None
        chunks = 0
        usage: dict[str, Any] | None = None
        finish = None
        done = False
        with open_stream(url, body, self.timeout_s, self.headers) as resp:
            if resp.status_code != 200:
                raise http_error(resp, url)
            for lineno, raw in enumerate(resp.iter_lines(decode_unicode=False), start=1):
                line = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else raw.strip()
                if not line or line.startswith(":"):
                    continue  # SSE keep-alive comment or event separator
                if not line.startswith("data:"):
                    if line.startswith(("event:", "id:", "retry:")):
                        continue
                    raise RequestFailed(
                        f"garbage from {url}: line {lineno} is not an SSE data line: {line[:80]!r}"
                    )
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                obj = parse_json_line(data, url, lineno)
                if "error" in obj:
                    err = obj["error"]
                    raise RequestFailed(
                        f"server error: {err.get('message', err) if isinstance(err, dict) else err}"
                    )
                if obj.get("usage"):
                    usage = obj["usage"]
                choices = obj.get("choices")
                if choices is None:
                    raise RequestFailed(f'garbage from {url}: line {lineno} has no "choices"')
                for choice in choices:
                    # `transformers serve` streams completions as chat-style deltas: take either form.
                    delta = (choice.get("delta") or {}).get("content")
                    piece = delta if self.api == "chat" else (choice.get("text") or delta)
                    if piece:
                        chunks += 1
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                        progress()
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        wall = time.perf_counter() - t0
        if not done and finish is None:
            # A stream may end without the "[DONE]" sentinel (transformers serve never sends it) once a
            # choice has said why it finished; a stream cut before that is a failed request.
            raise RequestFailed(f'stream from {url} ended without "data: [DONE]" or a finish_reason')
        output = usage.get("completion_tokens") if usage else None
        return {
            "wall_s": wall,
            "ttft_s": ttft,
            "output_tokens": output if output is not None else chunks,
            "prompt_tokens": usage.get("prompt_tokens") if usage else None,
            "finish_reason": finish,
        }
