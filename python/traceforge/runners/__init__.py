"""Load runners: drive inference backends at swept concurrency, each cell isolated, watched and recorded.

A sweep is a TOML spec (:mod:`.spec`); :mod:`.sweep` plans its cells and runs each one through :mod:`.cell`
(its own process group, optionally under ``nsys profile``, a heartbeat watchdog and a hard timeout) while
:mod:`.telemetry` samples the GPU. Backends (:mod:`.ollama`, :mod:`.openai`, :mod:`.pytorch_direct`) run
inside the cell's worker process. Results land in the store's ``runs``, ``cells``, ``requests``,
``telemetry`` and ``ncu_metrics`` tables (:mod:`.results`).
"""
