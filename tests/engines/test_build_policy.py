"""What a node builds: one precision failing verification keeps the ones that passed."""

from __future__ import annotations

from typing import Any

import pytest

from engines import build
from engines.node import CPU_NODE
from engines.verify import Comparison, Thresholds, VerificationFailed


def _failure(precision: str) -> VerificationFailed:
    comparison = Comparison(f"onnxruntime-{precision}", "torch", 10, 0.9, 0.5, {})
    return VerificationFailed(f"onnxruntime-{precision}", comparison, Thresholds())


def test_a_failed_int8_keeps_the_verified_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(bundle: Any, registry: Any, precision: str, **kw: Any) -> str:
        if precision == "int8":
            raise _failure("int8")
        return f"built {precision}"

    monkeypatch.setattr(build, "build_onnxruntime", fake)
    assert build.build_for_this_node(None, None, CPU_NODE) == ["built fp32"]  # type: ignore[arg-type]


def test_when_every_precision_fails_the_build_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(bundle: Any, registry: Any, precision: str, **kw: Any) -> str:
        raise _failure(precision)

    monkeypatch.setattr(build, "build_onnxruntime", fake)
    with pytest.raises(VerificationFailed, match="onnxruntime-fp32"):
        build.build_for_this_node(None, None, CPU_NODE)  # type: ignore[arg-type]
