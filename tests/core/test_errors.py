"""Every exception of the package is declared in ``traceforge.errors``, each with a code of its own."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import traceforge
from traceforge import errors


def _all_classes() -> list[type[errors.TraceforgeError]]:
    out, pending = [], [errors.TraceforgeError]
    while pending:
        cls = pending.pop()
        out.append(cls)
        pending.extend(cls.__subclasses__())
    return out


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    root = Path(traceforge.__file__).parent
    elsewhere = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "errors.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if any(
                    b.endswith(("Error", "Exception", "Interrupt", "Interrupted", "Failed")) for b in bases
                ):
                    elsewhere.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert elsewhere == []


def test_every_class_has_its_own_code_and_the_table_returns_it() -> None:
    for module in pkgutil.walk_packages(traceforge.__path__, "traceforge."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)  # every re-export imported: nothing may add a class
    classes = _all_classes()
    assert {cls.__module__ for cls in classes} == {"traceforge.errors"}
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    table = errors.error_classes()
    for cls in classes:
        assert table[cls.code] is cls
        assert errors.class_for_code(cls.code) is cls
    assert errors.class_for_code("no such code") is errors.TraceforgeError
    assert errors.class_for_code("interrupted") is errors.IngestInterrupted


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("traceforge.ingest.batch", "BatchError"),
        ("traceforge.ingest.batch", "SchedulerUnavailableError"),
        ("traceforge.store.dataset", "DatasetError"),
        ("traceforge.synth", "SynthArgumentError"),
        ("traceforge.synth", "SynthOutputError"),
        ("traceforge.synth", "SynthExistsError"),
        ("traceforge.synth", "SynthInterrupted"),
        ("traceforge.synth", "SynthModelError"),
        ("traceforge.synth", "TraceforgeError"),
        ("traceforge.runners.http_common", "RequestFailed"),
    ],
)
def test_old_import_paths_still_work(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_a_runner_request_failure_keeps_its_message() -> None:
    from traceforge.runners.http_common import RequestFailed

    exc = RequestFailed("HTTP 500 from http://x")
    assert str(exc) == "HTTP 500 from http://x" and exc.code == "request_failed"
    assert isinstance(exc, RuntimeError)
