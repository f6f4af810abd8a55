"""Loopback HTTP servers speaking Ollama's and the OpenAI streaming protocols, for the runner tests.

Faithful to the public API documents: Ollama's ``/api/generate`` and ``/api/chat`` stream NDJSON objects
(``response`` or ``message.content`` pieces, then a final ``"done": true`` object carrying ``total_duration``,
``load_duration``, ``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` in
nanoseconds, ``done_reason``); OpenAI's ``/v1/completions`` and ``/v1/chat/completions`` stream Server-Sent
Events ``data: {json}`` chunks (``choices[].text`` or ``choices[].delta.content``), an optional usage chunk
with empty ``choices`` when ``stream_options.include_usage`` is set, and ``data: [DONE]``.

Behaviour knobs (``mode``): ``ok``, ``slow`` (per-token delay), ``hang`` (accept, then never answer),
``stall`` (send a few tokens then stop sending without closing), ``garbage`` (200 with non-protocol bytes),
``error500``, ``unknown_model``, ``no_done`` (streams end after the finish_reason chunk, with no
``data: [DONE]``, as ``transformers serve`` does), ``cut`` (streams end mid-generation, no finish_reason).
``fail_every = k`` answers every k-th generation request with HTTP 500
(a server that fails some requests, not all). ``slots`` limits how many requests generate at once (a GPU
that serves ``slots`` streams at full speed): the token rate a test controls.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeServer:
    """A threaded loopback server; use as a context manager; ``url`` is its base URL."""

    def __init__(
        self,
        *,
        mode: str = "ok",
        token_delay_s: float = 0.005,
        slots: int = 1000,
        models: tuple[str, ...] = ("m",),
        fail_every: int = 0,
        port: int = 0,
    ) -> None:
        self.mode = mode
        self.fail_every = fail_every
        self.generations = 0
        self.token_delay_s = token_delay_s
        self.slots = threading.Semaphore(slots)
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"models": [{"name": m} for m in server.models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "body": req})
                try:
                    server.handle(self, req)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients killed mid-stream by the watchdog are expected here

        self.httpd = Quiet(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- protocol

    def _json(self, h: BaseHTTPRequestHandler, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _chunk(self, h: BaseHTTPRequestHandler, data: bytes) -> None:
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    def handle(self, h: BaseHTTPRequestHandler, req: dict[str, Any]) -> None:
        path = h.path
        ollama = path.startswith("/api/")
        if path not in ("/api/generate", "/api/chat", "/v1/completions", "/v1/chat/completions"):
            self._json(h, 404, {"error": f"404 page not found: {path}"})
            return
        if self.mode == "hang":
            self._stop.wait(60)
            return
        with self.lock:
            self.generations += 1
            unlucky = self.fail_every > 0 and self.generations % self.fail_every == 0
        if self.mode == "error500" or unlucky:
            self._json(
                h,
                500,
                {"error": "llama runner process has terminated: exit status 2"}
                if ollama
                else {"error": {"message": "internal error", "type": "server_error"}},
            )
            return
        if self.mode == "unknown_model" or req.get("model") not in self.models:
            if ollama:
                self._json(h, 404, {"error": f"model '{req.get('model')}' not found"})
            else:
                self._json(
                    h,
                    404,
                    {
                        "error": {
                            "message": f"The model `{req.get('model')}` does not exist.",
                            "type": "NotFoundError",
                            "code": 404,
                        }
                    },
                )
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson" if ollama else "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if self.mode == "garbage":
            self._chunk(h, b"<html><body>502 Bad Gateway</body></html>\n")
            self._chunk(h, b"")
            return
        if ollama:
            n = int(req.get("options", {}).get("num_predict", 8))
            prompt = req.get("prompt") or " ".join(m["content"] for m in req.get("messages", []))
        else:
            n = int(req.get("max_tokens", 16))
            prompt = req.get("prompt") or " ".join(m["content"] for m in req.get("messages", []))
        prompt_tokens = len(str(prompt).split())
        chat = path.endswith("chat") or path.endswith("chat/completions")
        t_start = time.perf_counter_ns()
        with self.slots:
            t_eval = time.perf_counter_ns()
            for i in range(n):
                if self.mode == "stall" and i == 2:
                    self._stop.wait(60)
                    return
                if self.mode == "cut" and i == 2:
                    self._chunk(h, b"")
                    return
                time.sleep(self.token_delay_s)
                piece = f"tok{i} "
                if ollama:
                    obj: dict[str, Any] = {
                        "model": req["model"],
                        "created_at": "2026-11-23T00:00:00Z",
                        "done": False,
                    }
                    if chat:
                        obj["message"] = {"role": "assistant", "content": piece}
                    else:
                        obj["response"] = piece
                    self._chunk(h, json.dumps(obj).encode() + b"\n")
                else:
                    choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if i == n - 1 else None}
                    if chat:
                        choice["delta"] = {"content": piece}
                    else:
                        choice["text"] = piece
                    obj = {
                        "id": "cmpl-1",
                        "object": "text_completion",
                        "created": 0,
                        "model": req["model"],
                        "choices": [choice],
                    }
                    self._chunk(h, b"data: " + json.dumps(obj).encode() + b"\n\n")
            t_end = time.perf_counter_ns()
        if ollama:
            final: dict[str, Any] = {
                "model": req["model"],
                "created_at": "2026-11-23T00:00:00Z",
                "done": True,
                "done_reason": "length",
                "total_duration": t_end - t_start,
                "load_duration": 1000,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": t_eval - t_start,
                "eval_count": n,
                "eval_duration": t_end - t_eval,
            }
            if chat:
                final["message"] = {"role": "assistant", "content": ""}
            else:
                final["response"] = ""
            self._chunk(h, json.dumps(final).encode() + b"\n")
        else:
            if (req.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": req["model"],
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n,
                        "total_tokens": prompt_tokens + n,
                    },
                }
                self._chunk(h, b"data: " + json.dumps(usage).encode() + b"\n\n")
            if self.mode != "no_done":
                self._chunk(h, b"data: [DONE]\n\n")
        self._chunk(h, b"")


def main() -> None:
    """Run the server in the foreground, as a sweep's ``[server]`` command would run a real one.

    ``python runner_servers.py PORT [--token-delay S] [--pid-file F]``: ``--pid-file`` gets one line per
    start (how the tests count server starts).
    """
    import argparse
    import os
    import signal
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--token-delay", type=float, default=0.005)
    ap.add_argument("--pid-file")
    ap.add_argument("--mode", default="ok")
    args = ap.parse_args()
    srv = FakeServer(token_delay_s=args.token_delay, port=args.port, mode=args.mode)
    if args.pid_file:
        with open(args.pid_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leaves serve_forever's loop
    print(f"serving on {srv.url}", flush=True)
    srv.httpd.serve_forever()


if __name__ == "__main__":
    main()
