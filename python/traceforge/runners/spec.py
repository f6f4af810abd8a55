"""Sweep specifications: TOML files parsed and validated before anything starts.

A spec is a public contract (``docs/runners.md``). Every error names the field (``concurrency[1]``,
``workloads[0].max_new_tokens``, ``capture.ncu_top_k``) and the file, so a typo costs seconds, not a sweep.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import InputNotFoundError, SpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as tomllib

BACKENDS = ("pytorch_direct", "ollama", "openai")

#: OpenAI-compatible servers: default port and the quirks the client adapts to.
PRESETS: dict[str, dict[str, Any]] = {
    # vLLM reports usage in a last chunk only when asked through stream_options, and honours ignore_eos and
    # min_tokens, which pin the output length as the studies did with min_new_tokens.
    "vllm": {"port": 8000, "stream_usage": True, "extra": {"ignore_eos": True}, "min_tokens": True},
    # SGLang speaks vLLM's dialect here, on port 30000.
    "sglang": {"port": 30000, "stream_usage": True, "extra": {"ignore_eos": True}, "min_tokens": True},
    # TGI (8080 natively, 3000 in its docker examples) ignores stream_options and extra sampling keys; its
    # Messages API wants the model name "tgi".
    "tgi": {"port": 8080, "stream_usage": False, "extra": {}, "min_tokens": False, "model_override": "tgi"},
    # `transformers serve` (transformers 5.x) ignores stream_options (refuses it with --input-validation),
    # has no ignore_eos or min_tokens, and ends streams without "data: [DONE]".
    "transformers": {"port": 8000, "stream_usage": False, "extra": {}, "min_tokens": False},
    # llama.cpp's server ignores the model name, accepts ignore_eos, and reports usage without asking.
    "llamacpp": {"port": 8080, "stream_usage": False, "extra": {"ignore_eos": True}, "min_tokens": False},
}

TOP_LEVEL = {
    "name",
    "description",
    "backend",
    "model",
    "base_url",
    "api",
    "preset",
    "api_key_env",
    "concurrency",
    "requests_per_agent",
    "repetitions",
    "max_new_tokens",
    "prompt",
    "prompt_tokens",
    "workloads",
    "warmup_requests",
    "timeout_s",
    "heartbeat_timeout_s",
    "request_timeout_s",
    "kill_grace_s",
    "agent_mode",
    "stream_per_agent",
    "dtype",
    "device",
    "model_config",
    "seed",
    "temperature",
    "options",
    "capture",
    "skip",
    "server",
    "telemetry",
    "telemetry_hz",
    "request_interval_s",
}
CAPTURE_KEYS = {
    "nsys",
    "ncu",
    "nsys_path",
    "ncu_path",
    "nsys_trace",
    "nsys_args",
    "ingest",
    "ncu_top_k",
    "ncu_launch_skip",
    "ncu_launch_count",
    "ncu_metrics",
    "ncu_requests",
    "ncu_timeout_s",
    "ncu_args",
    "keep_reports",
    "nsys_start_args",
    "require_gpu",
}
WORKLOAD_KEYS = {"name", "prompt", "prompt_tokens", "max_new_tokens", "request_interval_s", "api"}
SKIP_KEYS = {"workload", "n", "repetition", "model", "reason", "server"}
SERVER_KEYS = {"name", "command", "ready_url", "ready_timeout_s", "env", "under_nsys", "scope"}

#: The request APIs each backend speaks (the first is its default).
BACKEND_APIS: dict[str, tuple[str, ...]] = {
    "openai": ("completions", "chat"),
    "ollama": ("generate", "chat"),
    "pytorch_direct": ("generate",),
}

DEFAULT_NCU_METRICS = (
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__grid_size",
    "launch__block_size",
    "launch__registers_per_thread",
)


@dataclass(frozen=True)
class Workload:
    """One request shape: a prompt (text, or a length in tokens) and a number of new tokens."""

    name: str
    max_new_tokens: int
    prompt: str | None = None
    prompt_tokens: int | None = None
    request_interval_s: float = 0.0
    #: The endpoint this workload's requests use; ``None``: the spec's ``api``.
    api: str | None = None


@dataclass(frozen=True)
class Capture:
    """The ``[capture]`` table: nsys around each cell, ncu on the top kernels afterwards."""

    nsys: bool = False
    ncu: bool = False
    nsys_path: str | None = None
    ncu_path: str | None = None
    #: ``nsys profile -t``; ``None``: ``cuda,nvtx,osrt`` plus ``python-gil`` where nsys supports it
    #: (:mod:`traceforge.runners.nsys_trace`).
    nsys_trace: str | None = None
    nsys_args: tuple[str, ...] = ()
    ingest: bool = True
    ncu_top_k: int = 3
    ncu_launch_skip: int = 20
    ncu_launch_count: int = 2
    ncu_metrics: tuple[str, ...] = DEFAULT_NCU_METRICS
    ncu_requests: int = 1
    ncu_timeout_s: float = 600.0
    ncu_args: tuple[str, ...] = ()
    keep_reports: bool = True
    #: Options of ``nsys start`` for a server captured through an nsys session (``nsys_args`` go to
    #: ``nsys launch``, which fixes what is traced; ``nsys start`` fixes sampling and output).
    nsys_start_args: tuple[str, ...] = ("-s", "none", "--cpuctxsw=none")
    #: A cell whose export holds no GPU activity (no kernel and no CUDA graph execution) is failed.
    require_gpu: bool = True


@dataclass(frozen=True)
class SkipRule:
    """A cell excluded on purpose (known pathological); recorded as ``skipped`` with ``reason``."""

    reason: str
    workload: str | None = None
    n: int | None = None
    repetition: int | None = None
    model: str | None = None

    server: str | None = None

    def matches(self, model: str, workload: str, n: int, repetition: int, server: str | None = None) -> bool:
        """Whether this rule excludes the cell."""
        return (
            (self.server is None or self.server == server)
            and (self.workload is None or self.workload == workload)
            and (self.n is None or self.n == n)
            and (self.repetition is None or self.repetition == repetition)
            and (self.model is None or self.model == model)
        )


@dataclass(frozen=True)
class Server:
    """A server the sweep starts for a server backend (optionally traced by an nsys session).

    With ``scope = "sweep"`` (the default) it is started once for all the cells that use it and stopped
    after the last; with ``scope = "cell"`` it is started and stopped around each cell. Under nsys it runs
    in an nsys session (``nsys launch``) and each cell's measurement is one ``nsys start``/``nsys stop``.
    """

    command: tuple[str, ...]
    ready_url: str | None = None
    ready_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    under_nsys: bool = True
    #: Names the configuration in cell ids and sweep groups (several ``[[server]]`` tables need one each).
    name: str | None = None
    scope: str = "sweep"


@dataclass(frozen=True)
class Spec:
    """A validated sweep specification."""

    name: str
    backend: str
    models: tuple[str, ...]
    concurrency: tuple[int, ...]
    requests_per_agent: int
    workloads: tuple[Workload, ...]
    repetitions: int = 1
    base_url: str | None = None
    api: str = "generate"
    preset: str | None = None
    api_key_env: str | None = None
    warmup_requests: int = 0
    timeout_s: float = 600.0
    heartbeat_timeout_s: float = 120.0
    request_timeout_s: float = 300.0
    kill_grace_s: float = 10.0
    agent_mode: str = "threads"
    stream_per_agent: bool = False
    dtype: str = "float16"
    device: str = "cuda"
    model_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    temperature: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    capture: Capture = field(default_factory=Capture)
    skip: tuple[SkipRule, ...] = ()
    #: The ``[server]`` table, or each ``[[server]]`` table in order (empty: the spec starts no server).
    servers: tuple[Server, ...] = ()
    telemetry: bool = True
    telemetry_hz: float = 10.0
    description: str = ""
    source_path: str = ""
    source_toml: str = ""

    @property
    def model(self) -> str:
        """The models as one string (``runs.model``)."""
        return ",".join(self.models)

    @property
    def server(self) -> Server | None:
        """The first server (``None`` without one)."""
        return self.servers[0] if self.servers else None

    def workload_api(self, workload: Workload) -> str:
        """The endpoint a workload's requests use."""
        return workload.api or self.api

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the spec (sent to cell workers)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        """Rebuild a spec from :meth:`to_json`."""
        data = dict(data)
        data["models"] = tuple(data["models"])
        data["concurrency"] = tuple(data["concurrency"])
        data["workloads"] = tuple(Workload(**w) for w in data["workloads"])
        cap = dict(data["capture"])
        for key in ("nsys_args", "ncu_metrics", "ncu_args", "nsys_start_args"):
            cap[key] = tuple(cap[key])
        data["capture"] = Capture(**cap)
        data["skip"] = tuple(SkipRule(**s) for s in data["skip"])
        data["servers"] = tuple(
            Server(**{**srv, "command": tuple(srv["command"])}) for srv in data.get("servers") or ()
        )
        return cls(**data)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a sweep spec.

    Raises:
        InputNotFoundError: the file does not exist.
        SpecError: the TOML is malformed, or a field is unknown, missing or impossible (named in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError("no such spec file", path=str(p))
    text = p.read_text(encoding="utf-8")
    return parse_spec(text, source=str(p))


def parse_spec(text: str, *, source: str = "<spec>") -> Spec:
    """Validate a spec given as TOML text (see :func:`load_spec`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", path=source) from exc
    v = _Validator(source)
    spec = v.spec(data)
    return dataclasses.replace(spec, source_path=source, source_toml=text)


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{where}: {problem}", path=self.source)

    def unknown(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def need(self, table: dict[str, Any], key: str, prefix: str = "") -> Any:
        if key not in table:
            raise self.fail(f"{prefix}{key}", "missing (required)")
        return table[key]

    def int_(self, value: Any, where: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value}")
        return value

    def num(self, value: Any, where: str, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"must be a number, got {value!r}")
        if positive and not value > 0:
            raise self.fail(where, f"must be > 0, got {value}")
        if not positive and value < 0:
            raise self.fail(where, f"must be >= 0, got {value}")
        return float(value)

    def str_(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value

    def bool_(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {value!r}")
        return value

    def spec(self, d: dict[str, Any]) -> Spec:
        self.unknown(d, TOP_LEVEL, "")
        name = self.str_(self.need(d, "name"), "name")
        backend = self.need(d, "backend")
        if backend not in BACKENDS:
            raise self.fail("backend", f"unknown backend {backend!r} (one of: {', '.join(BACKENDS)})")
        model = self.need(d, "model")
        models = (model,) if isinstance(model, str) else model
        if not isinstance(models, (list, tuple)) or not models:
            raise self.fail("model", "must be a string or a non-empty list of strings")
        models = tuple(
            self.str_(m, f"model[{i}]" if not isinstance(model, str) else "model")
            for i, m in enumerate(models)
        )
        conc = self.need(d, "concurrency")
        if not isinstance(conc, list) or not conc:
            raise self.fail("concurrency", f"must be a non-empty list of positive integers, got {conc!r}")
        concurrency = tuple(self.int_(n, f"concurrency[{i}]") for i, n in enumerate(conc))
        if len(set(concurrency)) != len(concurrency):
            raise self.fail("concurrency", f"repeats a value: {list(concurrency)}")
        rpa = self.int_(self.need(d, "requests_per_agent"), "requests_per_agent")
        reps = self.int_(d.get("repetitions", 1), "repetitions")
        top_tokens = d.get("max_new_tokens")
        if top_tokens is not None:
            top_tokens = self.int_(top_tokens, "max_new_tokens")
        workloads = self.workloads(d, top_tokens)
        kwargs: dict[str, Any] = {}
        base_url = d.get("base_url")
        preset = d.get("preset")
        api = d.get("api")
        if backend == "openai":
            if preset is not None and preset not in PRESETS:
                raise self.fail("preset", f"unknown preset {preset!r} (one of: {', '.join(PRESETS)})")
            api = api or "completions"
            if api not in ("completions", "chat"):
                raise self.fail("api", f'must be "completions" or "chat" for openai, got {api!r}')
        elif backend == "ollama":
            api = api or "generate"
            if api not in ("generate", "chat"):
                raise self.fail("api", f'must be "generate" or "chat" for ollama, got {api!r}')
            if preset is not None:
                raise self.fail("preset", "only the openai backend has presets")
        else:
            api = api or "generate"
            if api != "generate":
                raise self.fail("api", f'pytorch_direct only has "generate", got {api!r}')
            if base_url is not None:
                raise self.fail("base_url", "pytorch_direct runs in-process and takes no base_url")
        if backend in ("ollama", "openai"):
            if base_url is None:
                raise self.fail(
                    "base_url",
                    "missing (required for the ollama and openai backends, "
                    'e.g. "http://127.0.0.1:11434" for Ollama, "http://127.0.0.1:8000" for vLLM)',
                )
            parsed = urlparse(self.str_(base_url, "base_url"))
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise self.fail("base_url", f"must be an http(s) URL, got {base_url!r}")
            try:
                parsed.port  # noqa: B018 - raises on a port out of range
            except ValueError as exc:
                raise self.fail("base_url", f"bad port in {base_url!r}") from exc
            kwargs["base_url"] = base_url.rstrip("/")
        for key in ("timeout_s", "heartbeat_timeout_s", "request_timeout_s", "kill_grace_s", "telemetry_hz"):
            if key in d:
                kwargs[key] = self.num(d[key], key)
        if "warmup_requests" in d:
            kwargs["warmup_requests"] = self.int_(d["warmup_requests"], "warmup_requests", minimum=0)
        if "agent_mode" in d:
            if d["agent_mode"] not in ("threads", "processes"):
                raise self.fail("agent_mode", f'must be "threads" or "processes", got {d["agent_mode"]!r}')
            kwargs["agent_mode"] = d["agent_mode"]
        for key in ("stream_per_agent", "telemetry"):
            if key in d:
                kwargs[key] = self.bool_(d[key], key)
        if "dtype" in d:
            if d["dtype"] not in ("float16", "bfloat16", "float32"):
                raise self.fail("dtype", f"must be float16, bfloat16 or float32, got {d['dtype']!r}")
            kwargs["dtype"] = d["dtype"]
        if "device" in d:
            kwargs["device"] = self.str_(d["device"], "device")
        for key in ("model_config", "options"):
            if key in d:
                if not isinstance(d[key], dict):
                    raise self.fail(key, "must be a table")
                kwargs[key] = dict(d[key])
        if "seed" in d:
            kwargs["seed"] = self.int_(d["seed"], "seed", minimum=0)
        if "temperature" in d:
            kwargs["temperature"] = self.num(d["temperature"], "temperature", positive=False)
        if "api_key_env" in d:
            kwargs["api_key_env"] = self.str_(d["api_key_env"], "api_key_env")
        if "description" in d:
            kwargs["description"] = str(d["description"])
        capture = self.capture(d.get("capture", {}))
        if capture.nsys and backend != "pytorch_direct" and "server" not in d:
            raise self.fail(
                "capture.nsys",
                "a server backend is captured through its server: add a [server] "
                "table with the command that starts it",
            )
        for i, w in enumerate(workloads):
            if w.api is not None and w.api not in BACKEND_APIS[backend]:
                allowed = " or ".join(f'"{a}"' for a in BACKEND_APIS[backend])
                raise self.fail(f"workloads[{i}].api", f"must be {allowed} for {backend}, got {w.api!r}")
        servers = self.servers(d["server"]) if "server" in d else ()
        if servers and backend == "pytorch_direct":
            raise self.fail("server", "pytorch_direct runs in-process and takes no [server]")
        skip = self.skips(d.get("skip", []), {w.name for w in workloads}, {s.name for s in servers if s.name})
        return Spec(
            name=name,
            backend=backend,
            models=models,
            concurrency=concurrency,
            requests_per_agent=rpa,
            workloads=workloads,
            repetitions=reps,
            api=api,
            preset=preset,
            capture=capture,
            skip=skip,
            servers=servers,
            **kwargs,
        )

    def workloads(self, d: dict[str, Any], top_tokens: int | None) -> tuple[Workload, ...]:
        interval = self.num(d.get("request_interval_s", 0), "request_interval_s", positive=False)
        if "workloads" in d:
            if "prompt" in d or "prompt_tokens" in d:
                raise self.fail("prompt", "give either a top-level prompt or [[workloads]], not both")
            raw = d["workloads"]
            if not isinstance(raw, list) or not raw:
                raise self.fail("workloads", "must be a non-empty array of tables ([[workloads]])")
            out = []
            for i, w in enumerate(raw):
                where = f"workloads[{i}]."
                if not isinstance(w, dict):
                    raise self.fail(f"workloads[{i}]", "must be a table")
                self.unknown(w, WORKLOAD_KEYS, where)
                wname = self.str_(self.need(w, "name", where), where + "name")
                out.append(self._workload(w, where, wname, top_tokens, interval))
            names = [w.name for w in out]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise self.fail("workloads", f"duplicate workload name(s): {', '.join(sorted(dup))}")
            return tuple(out)
        if "prompt" not in d and "prompt_tokens" not in d:
            raise self.fail("prompt", "missing (give prompt, prompt_tokens, or a [[workloads]] list)")
        return (self._workload(d, "", "default", top_tokens, interval),)

    def _workload(
        self, w: dict[str, Any], where: str, name: str, top_tokens: int | None, interval: float
    ) -> Workload:
        if "prompt" in w and "prompt_tokens" in w:
            raise self.fail(where + "prompt", "give prompt or prompt_tokens, not both")
        prompt = self.str_(w["prompt"], where + "prompt") if "prompt" in w else None
        ptok = self.int_(w["prompt_tokens"], where + "prompt_tokens") if "prompt_tokens" in w else None
        if prompt is None and ptok is None:
            raise self.fail(where + "prompt", "missing (give prompt or prompt_tokens)")
        if "max_new_tokens" in w and where:
            tokens = self.int_(w["max_new_tokens"], where + "max_new_tokens")
        elif top_tokens is not None:
            tokens = top_tokens
        else:
            raise self.fail(where + "max_new_tokens", "missing (required, here or at the top level)")
        if "request_interval_s" in w and where:
            interval = self.num(w["request_interval_s"], where + "request_interval_s", positive=False)
        api = self.str_(w["api"], where + "api") if "api" in w and where else None
        return Workload(
            name=name,
            max_new_tokens=tokens,
            prompt=prompt,
            prompt_tokens=ptok,
            request_interval_s=interval,
            api=api,
        )

    def capture(self, c: Any) -> Capture:
        if not isinstance(c, dict):
            raise self.fail("capture", "must be a table ([capture])")
        self.unknown(c, CAPTURE_KEYS, "capture.")
        kw: dict[str, Any] = {}
        for key in ("nsys", "ncu", "ingest", "keep_reports", "require_gpu"):
            if key in c:
                kw[key] = self.bool_(c[key], f"capture.{key}")
        for key in ("nsys_path", "ncu_path", "nsys_trace"):
            if key in c:
                kw[key] = self.str_(c[key], f"capture.{key}")
        for key, minimum in (
            ("ncu_top_k", 1),
            ("ncu_launch_skip", 0),
            ("ncu_launch_count", 1),
            ("ncu_requests", 1),
        ):
            if key in c:
                kw[key] = self.int_(c[key], f"capture.{key}", minimum=minimum)
        if "ncu_timeout_s" in c:
            kw["ncu_timeout_s"] = self.num(c["ncu_timeout_s"], "capture.ncu_timeout_s")
        for key in ("nsys_args", "ncu_metrics", "ncu_args", "nsys_start_args"):
            if key in c:
                vals = c[key]
                if not isinstance(vals, list) or not all(isinstance(x, str) and x for x in vals):
                    raise self.fail(f"capture.{key}", "must be a list of non-empty strings")
                if key == "ncu_metrics" and not vals:
                    raise self.fail("capture.ncu_metrics", "must name at least one metric")
                kw[key] = tuple(vals)
        cap = Capture(**kw)
        if cap.ncu and not cap.nsys:
            raise self.fail(
                "capture.ncu", "needs capture.nsys = true (the top kernels come from the nsys trace)"
            )
        if cap.ncu and not cap.ingest:
            raise self.fail(
                "capture.ncu", "needs capture.ingest = true (top kernels are read from kernel_summary)"
            )
        return cap

    def skips(self, raw: Any, workloads: set[str], servers: set[str]) -> tuple[SkipRule, ...]:
        if not isinstance(raw, list):
            raise self.fail("skip", "must be an array of tables ([[skip]])")
        out = []
        for i, s in enumerate(raw):
            where = f"skip[{i}]."
            if not isinstance(s, dict):
                raise self.fail(f"skip[{i}]", "must be a table")
            self.unknown(s, SKIP_KEYS, where)
            reason = self.str_(self.need(s, "reason", where), where + "reason")
            wl = s.get("workload")
            if wl is not None and wl not in workloads:
                raise self.fail(where + "workload", f"no workload named {wl!r}")
            n = self.int_(s["n"], where + "n") if "n" in s else None
            rep = self.int_(s["repetition"], where + "repetition", minimum=0) if "repetition" in s else None
            model = self.str_(s["model"], where + "model") if "model" in s else None
            server = s.get("server")
            if server is not None and server not in servers:
                raise self.fail(where + "server", f"no [[server]] named {server!r}")
            out.append(SkipRule(reason=reason, workload=wl, n=n, repetition=rep, model=model, server=server))
        return tuple(out)

    def servers(self, raw: Any) -> tuple[Server, ...]:
        """``[server]`` (one table) or ``[[server]]`` (an array of named tables, one per configuration)."""
        if isinstance(raw, dict):
            return (self.server(raw, "server."),)
        if not isinstance(raw, list) or not raw:
            raise self.fail("server", "must be a table ([server]) or an array of tables ([[server]])")
        out = tuple(self.server(s, f"server[{i}].") for i, s in enumerate(raw))
        for i, srv in enumerate(out):
            if srv.name is None:
                raise self.fail(f"server[{i}].name", "missing (each of several [[server]] tables needs one)")
        names = [s.name for s in out]
        dup = sorted({n for n in names if n is not None and names.count(n) > 1})
        if dup:
            raise self.fail("server", f"duplicate server name(s): {', '.join(dup)}")
        return out

    def server(self, s: Any, where: str = "server.") -> Server:
        if not isinstance(s, dict):
            raise self.fail(where.rstrip("."), "must be a table")
        self.unknown(s, SERVER_KEYS, where)
        cmd = self.need(s, "command", where)
        if not isinstance(cmd, list) or not cmd or not all(isinstance(x, str) and x for x in cmd):
            raise self.fail(
                where + "command", 'must be a non-empty list of strings, e.g. ["ollama", "serve"]'
            )
        env = s.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise self.fail(where + "env", "must be a table of strings")
        kw: dict[str, Any] = {}
        if "ready_url" in s:
            kw["ready_url"] = self.str_(s["ready_url"], where + "ready_url")
        if "ready_timeout_s" in s:
            kw["ready_timeout_s"] = self.num(s["ready_timeout_s"], where + "ready_timeout_s")
        if "under_nsys" in s:
            kw["under_nsys"] = self.bool_(s["under_nsys"], where + "under_nsys")
        if "name" in s:
            name = self.str_(s["name"], where + "name")
            if not name or "/" in name:
                raise self.fail(where + "name", f"must be a non-empty name without '/', got {name!r}")
            kw["name"] = name
        if "scope" in s:
            if s["scope"] not in ("sweep", "cell"):
                raise self.fail(where + "scope", f'must be "sweep" or "cell", got {s["scope"]!r}')
            kw["scope"] = s["scope"]
        return Server(command=tuple(cmd), env=dict(env), **kw)
