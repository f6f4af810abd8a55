"""pytorch_direct backend: a transformers causal LM in-process, as the studies ran it.

Each request is a greedy ``generate()`` with ``min_new_tokens = max_new_tokens`` (so random weights cannot
stop early on an end token), timed on the host; time to first token comes from a streamer (``generate``
hands it the prompt first, then each new token). Each request is wrapped in an NVTX range
``agent{a}/req{r}`` so an ingested trace can be projected per request (``nvtx_projection``). With
``stream_per_agent`` each agent thread issues its work on its own CUDA stream instead of the default stream.

The model is a local checkpoint (``model`` = a directory) or, with a ``[model_config]`` table, a real
architecture with random weights (no download): e.g. a Llama-3.2-1B shape. torch and transformers are
imported only here, inside the cell's worker process.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from .http_common import RequestFailed

#: Shape of Llama-3.2-1B (used when model_config names ``preset = "llama-3.2-1b"``).
LLAMA_32_1B = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}


class _Streamer:
    """transformers streamer that timestamps the first generated token and reports progress."""

    def __init__(self, progress: Callable[[], None]) -> None:
        self.progress = progress
        self.calls = 0
        self.t_first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.t_first is None:  # call 1 is the prompt
            self.t_first = time.perf_counter()
        if self.calls >= 2:
            self.progress()

    def end(self) -> None:
        pass


class PytorchDirectBackend:
    """One model shared by the agent threads of a cell (or one per agent process)."""

    def __init__(
        self,
        model: str,
        *,
        model_config: dict[str, Any],
        dtype: str = "float16",
        device: str = "cuda",
        seed: int = 0,
        stream_per_agent: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.seed = seed
        self.stream_per_agent = stream_per_agent and device.startswith("cuda")
        self.dtype = getattr(torch, dtype)
        self.tokenizer = None
        torch.manual_seed(seed)
        if model_config:
            import transformers

            cfg = dict(model_config)
            preset = cfg.pop("preset", None)
            if preset is not None:
                if preset != "llama-3.2-1b":
                    raise ValueError(f"model_config.preset: unknown preset {preset!r} (known: llama-3.2-1b)")
                cfg = {**LLAMA_32_1B, **cfg}
            model_type = cfg.pop("model_type", "llama")
            config = transformers.AutoConfig.for_model(model_type, **cfg)
            # Building on the target device avoids initialising a billion weights on the CPU.
            with torch.device(device):
                try:
                    self.model = transformers.AutoModelForCausalLM.from_config(config, dtype=self.dtype)
                except TypeError:  # transformers 4.x spells it torch_dtype
                    self.model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=self.dtype)
        else:
            if not os.path.isdir(model):
                raise ValueError(
                    f"model: {model!r} is not a local model directory (or give a [model_config])"
                )
            import transformers

            try:
                self.model = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=self.dtype)
            except TypeError:
                self.model = transformers.AutoModelForCausalLM.from_pretrained(model, torch_dtype=self.dtype)
            try:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
            except Exception:  # noqa: BLE001 - a checkpoint without tokenizer still runs on token ids
                self.tokenizer = None
        self.model = self.model.to(device=device, dtype=self.dtype)
        self.model.eval()
        gen = self.model.generation_config
        if gen.pad_token_id is None:
            gen.pad_token_id = gen.eos_token_id if gen.eos_token_id is not None else 0
        self.vocab = int(self.model.config.vocab_size)
        self._streams: dict[int, Any] = {}
        self._lock = threading.Lock()

    def prompt_ids(self, prompt: str | None, prompt_tokens: int | None) -> Any:
        """Token ids of a workload's prompt: tokenized text, or ``prompt_tokens`` seeded random ids."""
        torch = self.torch
        if prompt is not None and self.tokenizer is not None:
            return self.tokenizer(prompt, return_tensors="pt").input_ids
        if prompt is not None:
            raw = list(prompt.encode("utf-8")) or [0]
            return torch.tensor([[b % self.vocab for b in raw]], dtype=torch.long)
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randint(0, self.vocab, (1, int(prompt_tokens or 1)), generator=gen)

    def _stream(self, agent: int) -> Any:
        with self._lock:
            if agent not in self._streams:
                self._streams[agent] = self.torch.cuda.Stream()
            return self._streams[agent]

    def request(
        self, ids: Any, max_new_tokens: int, progress: Callable[[], None], *, agent: int, index: int
    ) -> dict[str, Any]:
        """Run one greedy generate of exactly ``max_new_tokens`` tokens."""
        torch = self.torch
        cuda = self.device.startswith("cuda")
        streamer = _Streamer(progress)
        label = f"agent{agent}/req{index}"
        t0 = time.perf_counter()
        if cuda:
            torch.cuda.nvtx.range_push(label)
        try:
            with torch.inference_mode():
                input_ids = ids.to(self.device)
                mask = torch.ones_like(input_ids)
                kwargs = {
                    "input_ids": input_ids,
                    "attention_mask": mask,
                    "max_new_tokens": max_new_tokens,
                    "min_new_tokens": max_new_tokens,
                    "do_sample": False,
                    "streamer": streamer,
                }
                if self.stream_per_agent:
                    stream = self._stream(agent)
                    with torch.cuda.stream(stream):
                        out = self.model.generate(**kwargs)
                    stream.synchronize()
                else:
                    out = self.model.generate(**kwargs)
                    if cuda:
                        torch.cuda.current_stream().synchronize()
        except torch.cuda.OutOfMemoryError as exc:
            raise RequestFailed(f"CUDA out of memory: {str(exc).splitlines()[0]}") from exc
        except RuntimeError as exc:
            raise RequestFailed(
                f"generate failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            ) from exc
        finally:
            if cuda:
                torch.cuda.nvtx.range_pop()
        wall = time.perf_counter() - t0
        prompt_len = int(ids.shape[1])
        return {
            "wall_s": wall,
            "ttft_s": None if streamer.t_first is None else streamer.t_first - t0,
            "output_tokens": int(out.shape[1]) - prompt_len,
            "prompt_tokens": prompt_len,
            "finish_reason": "length",
            "nvtx_range": label if cuda else None,
        }


def versions() -> dict[str, Any]:
    """torch/transformers/CUDA versions for the run manifest."""
    out: dict[str, Any] = {}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    return out
