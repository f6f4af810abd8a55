"""GPU telemetry: a pynvml sampler thread (about 10 Hz) running beside each cell.

Without pynvml or without a GPU the sampler records one row with ``available = FALSE`` and the reason in
``note``, so a sweep on a CPU-only machine says so instead of crashing or pretending zero watts.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any


def _pynvml() -> Any:
    with warnings.catch_warnings():
        # The "pynvml" wrapper package warns on import in favour of nvidia-ml-py (same module).
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml
    return pynvml


class TelemetrySampler:
    """Samples every visible GPU until :meth:`stop`; :meth:`drain` hands over the rows taken so far.

    Args:
        hz: samples per second.
    """

    def __init__(self, hz: float = 10.0) -> None:
        self.period = 1.0 / hz
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self.available = False
        self.note: str | None = None

    def start(self) -> TelemetrySampler:
        """Start sampling in a daemon thread."""
        self._t0 = time.monotonic()
        try:
            pynvml = _pynvml()
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if not handles:
                raise RuntimeError("NVML sees no GPU")
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError (no driver), no GPU: all "unavailable"
            self.note = f"telemetry unavailable: {type(exc).__name__}: {str(exc) or 'no detail'}"
            with self._lock:
                self._rows.append({"t_s": 0.0, "available": False, "note": self.note})
            return self
        self.available = True
        self._thread = threading.Thread(
            target=self._loop, args=(pynvml, handles), name="traceforge-telemetry", daemon=True
        )
        self._thread.start()
        return self

    def _loop(self, pynvml: Any, handles: list[Any]) -> None:
        def read(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except Exception:  # noqa: BLE001 - a counter this GPU does not expose stays NULL
                return None

        while not self._stop.is_set():
            t = time.monotonic() - self._t0
            rows = []
            for i, h in enumerate(handles):
                power = read(pynvml.nvmlDeviceGetPowerUsage, h)
                util = read(pynvml.nvmlDeviceGetUtilizationRates, h)
                mem = read(pynvml.nvmlDeviceGetMemoryInfo, h)
                rows.append(
                    {
                        "t_s": t,
                        "gpu_index": i,
                        "power_w": None if power is None else power / 1000.0,
                        "temperature_c": read(
                            pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU
                        ),
                        "sm_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                        "mem_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
                        "gpu_util_pct": None if util is None else util.gpu,
                        "mem_util_pct": None if util is None else util.memory,
                        "mem_used_bytes": None if mem is None else mem.used,
                        "available": True,
                    }
                )
            with self._lock:
                self._rows.extend(rows)
            self._stop.wait(self.period)

    def drain(self) -> list[dict[str, Any]]:
        """Rows sampled since the last call."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling and return the remaining rows."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return self.drain()


def gpu_inventory() -> dict[str, Any]:
    """GPU names, driver and CUDA driver version from NVML, for the run manifest (empty without NVML)."""
    try:
        pynvml = _pynvml()
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        gpus = []
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_bytes": mem.total,
                }
            )
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        return {
            "gpus": gpus,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "cuda_driver": f"{cuda // 1000}.{(cuda % 1000) // 10}",
        }
    except Exception as exc:  # noqa: BLE001 - no NVML: the manifest says why
        return {"gpus": [], "nvml_error": f"{type(exc).__name__}: {exc}"}
