"""Export and parity on the real MiniLM student: ONNX Runtime (fp32, int8) against the torch reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from engines.base import EngineOptions, load_engine, softmax
from engines.build import VerificationFailed, build_onnxruntime
from engines.bundle import Bundle
from engines.checkpoint import read_checkpoint
from engines.verify import Thresholds, compare

from .conftest import sample_texts

pytestmark = pytest.mark.slow


def test_onnx_graph_has_dynamic_axes_and_one_output_per_task(registered) -> None:
    """The exported graph: opset ≥ 17, dynamic batch and sequence on every input, one output per task."""
    _, bundle = registered
    graph = onnx.load(str(bundle.onnx_path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for tensor in graph.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    assert [o.name for o in graph.graph.output] == [
        "logits_intent",
        "logits_sentiment",
        "logits_dialogue_act",
    ]


def test_onnxruntime_matches_torch_on_the_real_student(registered) -> None:
    """fp32 ONNX Runtime probabilities are within 1e-4 of torch, with identical labels on every sample."""
    _, bundle = registered
    texts = sample_texts()
    with load_engine(bundle, "torch") as ref, load_engine(bundle, "onnxruntime") as ort:
        expected, got = ref.infer(texts), ort.infer(texts)
    for task in expected:
        assert np.abs(got[task] - expected[task]).max() < 1e-4
        assert (got[task].argmax(1) == expected[task].argmax(1)).all()
        assert np.allclose(got[task].sum(1), 1.0, atol=1e-5)


def test_predictions_are_the_same_in_any_order_and_batch_size(registered) -> None:
    """Bucketing and batching change neither the values nor their order in the output."""
    _, bundle = registered
    texts = sample_texts()
    with load_engine(bundle, "onnxruntime", EngineOptions(max_batch=64, bucket=False)) as plain:
        base = plain.infer(texts)
    with load_engine(bundle, "onnxruntime", EngineOptions(max_batch=5, bucket=True)) as bucketed:
        got = bucketed.infer(texts)
        reversed_got = bucketed.infer(texts[::-1])
    for task in base:
        assert np.abs(got[task] - base[task]).max() < 1e-5
        assert np.abs(reversed_got[task][::-1] - base[task]).max() < 1e-5


def test_checkpoint_reload_gives_identical_predictions(checkpoint_dir: Path, registered) -> None:
    """The checkpoint read back and the bundle's torch weights predict exactly the same."""
    import torch

    _, bundle = registered
    _, model = read_checkpoint(checkpoint_dir)
    with load_engine(bundle, "torch") as engine:
        via_bundle = engine.infer(sample_texts()[:8])
    batch = next(engine.tokenizer.batches(sample_texts()[:8], max_batch=8, bucket=False))
    with torch.inference_mode():
        direct = model(**{k: torch.from_numpy(v) for k, v in batch.feeds.items()})
    for task, logits in direct.items():
        assert np.array_equal(softmax(logits.numpy()), via_bundle[task])


def test_int8_engine_is_built_verified_and_recorded(registered) -> None:
    """INT8 dynamic quantisation passes its thresholds; its record holds parity and accuracy change."""
    registry, bundle = registered
    result = build_onnxruntime(bundle, registry, "int8")
    record = Bundle.open(bundle.path).engine_record(result.record.engine_id)
    assert record.precision == "int8"
    assert record.parity is not None
    assert record.parity.label_agreement >= 0.95
    assert set(record.parity.accuracy_delta) == {"intent", "sentiment", "dialogue_act"}
    ops = {node.op_type for node in onnx.load(str(bundle.path / record.file)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # weights int8, activations quantised per call
    with load_engine(bundle, "onnxruntime", EngineOptions(precision="int8")) as int8:
        assert int8.infer(["where is my parcel?"])["sentiment"].shape == (1, 3)


def test_strict_thresholds_refuse_an_engine(registered) -> None:
    """A build that misses its thresholds raises and records nothing."""
    registry, bundle = registered
    before = {r.engine_id for r in Bundle.open(bundle.path).engine_records()}
    with pytest.raises(VerificationFailed, match="failed verification"):
        build_onnxruntime(
            bundle, registry, "int8", thresholds=Thresholds(min_agreement=1.0, max_abs_diff=0.0)
        )
    after = {r.engine_id for r in Bundle.open(bundle.path).engine_records()}
    assert after <= before | {r for r in after if "int8" in r}  # nothing new but a previously built int8


def test_compare_reports_accuracy_against_gold(registered) -> None:
    """With gold labels, verification reports each task's accuracy change against torch."""
    _, bundle = registered
    texts, gold = bundle.sample()
    comparison = compare(bundle, "onnxruntime", texts, gold=gold)
    assert comparison.samples == len(texts)
    assert comparison.accuracy_delta == {"intent": 0.0, "sentiment": 0.0, "dialogue_act": 0.0}


def test_sample_file_is_part_of_the_bundle(registered) -> None:
    """The verification sample travels with the bundle and is covered by its digests."""
    _, bundle = registered
    assert "sample.jsonl" in bundle.manifest.files
    first = json.loads((bundle.path / "sample.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "gold"}
