"""The training loop end to end: a tiny random BERT must learn a separable task the test builds, with
the method and with every baseline; the checkpoint reloads to the same predictions."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines.checkpoint import read_checkpoint  # noqa: E402
from engines.torch.model import StudentModel, default_encoder  # noqa: E402
from train.data import Dataset, Utterance, human_budget, split_by_dialogue  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.loop import FitConfig, Trainer  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
WORDS = {
    "negative": ["awful", "terrible", "bad", "angry"],
    "neutral": ["table", "monday", "number", "street"],
    "positive": ["great", "wonderful", "thanks", "happy"],
}


def synthetic(n_dialogues: int = 60, turns: int = 6, seed: int = 0) -> Dataset:
    """Dialogues whose utterances carry their class's words; noisy LLM scores, clean gold labels."""
    rng = random.Random(seed)
    utterances, gold, ensemble = {}, {}, {}
    for d in range(n_dialogues):
        for t in range(turns):
            label = rng.choice(LABELS)
            text = " ".join(rng.choice(WORDS[label]) for _ in range(3)) + " " + rng.choice(WORDS["neutral"])
            uid = f"d{d}-{t}"
            utterances[uid] = Utterance(uid, f"d{d}", t, text, "test" if d >= n_dialogues - 10 else "train")
            gold[uid] = label
            noisy = label if rng.random() < 0.75 else rng.choice(LABELS)
            ensemble[uid] = [0.7 if name == noisy else 0.15 for name in LABELS]
    return Dataset(utterances, {"sentiment": LABELS}, {"sentiment": gold}, {"sentiment": ensemble})


def tiny_student() -> StudentModel:
    from transformers import AutoTokenizer, BertConfig, BertModel

    vocab = AutoTokenizer.from_pretrained(default_encoder()).vocab_size
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return StudentModel(BertModel(config), [("sentiment", 3)])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["method", "ce_human", "ce_llm_hard", "distill", "gce"])
def test_tiny_random_bert_beats_chance(method: str, tmp_path: Path) -> None:
    """Every method learns the separable task well above chance (1/3) on held-out dialogues."""
    data = synthetic()
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    config = FitConfig(
        method=method,
        pretrain_epochs=3,
        finetune_epochs=6,
        lr=3e-3,
        head_lr=3e-3,
        batch_size=16,
        max_length=16,
        tau=0.2,
        patience=3,
    )
    trainer = Trainer(data, split, human_budget(split.train, 0.3, seed=0), config, model=tiny_student())
    result = trainer.fit(tmp_path / "ckpt")
    test = trainer.evaluate(split.test)
    assert test["sentiment/accuracy"] > 0.6, (method, test)
    assert result.metrics["dev/sentiment/macro_f1"] > 0.5
    assert result.history  # one row per epoch and stage


def test_the_llm_stage_keeps_its_best_epoch_by_the_chosen_metric(tmp_path: Path) -> None:
    """Every epoch records dev AUC and macro-F1; the LLM stage ends on the epoch best by
    ``pretrain_select`` (no fine-tuning epoch runs here, so the final dev metrics are that epoch's),
    and on this run the two metrics pick different epochs, so a selection that ignored the setting
    would fail one of the two."""
    data = synthetic(30)
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    ended = {}
    for select, key in (("auc", "auc"), ("macro_f1", "macro_f1")):
        config = FitConfig(
            method="method",
            pretrain_epochs=4,
            finetune_epochs=0,
            lr=0.1,  # steps so large that the epochs' scores jump about: the best is not simply the last
            head_lr=0.1,
            batch_size=16,
            max_length=16,
            patience=10,
            pretrain_select=select,  # type: ignore[arg-type]
        )
        trainer = Trainer(data, split, split.train, config, model=tiny_student())
        result = trainer.fit(tmp_path / select, write=False)
        epochs = [h for h in result.history if h["stage"] == 0.0]
        assert len(epochs) == 4
        assert all(0 <= h["dev_auc"] <= 1 for h in epochs)
        assert result.metrics[f"dev/sentiment/{key}"] == pytest.approx(max(h[f"dev_{key}"] for h in epochs))
        ended[select] = (result.metrics["dev/sentiment/auc"], result.metrics["dev/sentiment/macro_f1"])
    assert ended["auc"] != ended["macro_f1"]


def test_head_calibration_sets_the_class_levels_ranking_left_unset(tmp_path: Path) -> None:
    """A short, slow LLM stage of pairs ranks the dev utterances well (AUC) but predicts one class
    (macro-F1 at the floor); refitting the heads' biases on the budget's labels lifts macro-F1 and
    moves no weight but the biases."""
    data = synthetic(30)
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    common: dict[str, Any] = {
        "method": "method",
        "pretrain_epochs": 2,
        "finetune_epochs": 0,
        "lr": 3e-4,
        "head_lr": 3e-4,
        "batch_size": 16,
        "max_length": 16,
    }
    budget = human_budget(split.train, 0.3, seed=0)
    plain = Trainer(data, split, budget, FitConfig(**common), model=tiny_student())
    before = plain.fit(tmp_path / "a", write=False).metrics
    config = FitConfig(**common, head_calibration="bias")
    calibrated = Trainer(data, split, budget, config, model=tiny_student())
    after = calibrated.fit(tmp_path / "b", write=False).metrics
    assert before["dev/sentiment/auc"] > 0.8  # the ranking is there ...
    assert before["dev/sentiment/macro_f1"] < 0.3  # ... the levels are not
    assert after["dev/sentiment/macro_f1"] > before["dev/sentiment/macro_f1"] + 0.3
    assert set(calibrated.head_offsets) == {"sentiment"}
    # the offsets fit the budget: its gold labels' cross-entropy falls
    human = [u for u in data.utterances.values() if u.dialogue_id in set(budget)]
    truth = torch.tensor([LABELS.index(data.gold["sentiment"][u.id]) for u in human])

    def budget_nll(trainer: Trainer) -> float:
        _, probs = trainer.predict_utterances(human)
        return float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs["sentiment"])), truth))

    assert budget_nll(calibrated) < budget_nll(plain) - 0.1
    moved = {
        name
        for (name, a), (_, b) in zip(
            plain.model.state_dict().items(), calibrated.model.state_dict().items(), strict=True
        )
        if not torch.equal(a, b)
    }
    assert moved == {"heads.sentiment.bias"}


@pytest.mark.slow
def test_checkpoint_reloads_to_identical_predictions(tmp_path: Path) -> None:
    """The written checkpoint, read back, predicts exactly what the trained model predicted."""
    data = synthetic(20)
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    trainer = Trainer(
        data,
        split,
        split.train,
        FitConfig(method="ce_human", finetune_epochs=1, max_length=16),
        model=tiny_student(),
    )
    result = trainer.fit(tmp_path / "ckpt")
    _, before = trainer.predict(split.test)
    manifest, model = read_checkpoint(result.checkpoint)
    trainer.model = model
    _, after = trainer.predict(split.test)
    assert torch.equal(torch.from_numpy(before["sentiment"]), torch.from_numpy(after["sentiment"]))
    assert manifest.training.config["method"] == "ce_human"


def test_bad_configurations_are_refused(tmp_path: Path) -> None:
    """An unknown method, or a method that needs LLM records without any, fails with the reason."""
    with pytest.raises(TrainError, match="unknown method"):
        FitConfig(method="magic")  # type: ignore[arg-type]
    data = synthetic(12)
    data.ensemble = {}
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    trainer = Trainer(
        data, split, split.train, FitConfig(method="distill", max_length=16), model=tiny_student()
    )
    with pytest.raises(TrainError, match="LLM label records"):
        trainer.fit(tmp_path / "ckpt")


@pytest.mark.slow
def test_fit_command_on_the_real_minilm(
    tmp_path: Path, kafka_settings: Any, unique_name: Callable[[str], str]
) -> None:
    """`parley train fit --publish` on the real MiniLM over a few dozen utterances writes a checkpoint
    that `parley engine check-manifest` accepts, registers it as a bundle and announces it on Kafka."""
    import asyncio
    import json

    from engines.events import ModelTrained, decode_model_event
    from engines.registry import Registry
    from stream.tail import read
    from stream.topics import TopicSpec, delete_topics, ensure_topics

    topic = unique_name("events")
    asyncio.run(ensure_topics(kafka_settings, [TopicSpec(topic, 1)]))

    from click.testing import CliRunner

    from parley.cli import cli
    from train.demo import labelled_samples

    samples = labelled_samples()[:48]  # a few dozen: enough for every step, quick on CPU
    rows, gold, llm = [], [], []
    for k, (text, labels) in enumerate(samples):
        uid, dialogue = f"u{k}", f"d{k // 6}"
        rows.append(
            {
                "id": uid,
                "dialogue_id": dialogue,
                "turn": k % 6,
                "text": text,
                "split": "test" if k >= 36 else "train",
            }
        )
        gold.append({"id": uid, "task": "sentiment", "label": labels["sentiment"]})
        llm.append(
            {
                "id": uid,
                "task": "sentiment",
                "prompt_id": "p1",
                "label": labels["sentiment"],
                "scores": {labels["sentiment"]: 0.8},
            }
        )
    for name, records in (("u.jsonl", rows), ("g.jsonl", gold), ("l.jsonl", llm)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "labels.json").write_text(json.dumps({"sentiment": ["negative", "neutral", "positive"]}))
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "fit",
            "--utterances",
            str(tmp_path / "u.jsonl"),
            "--gold",
            str(tmp_path / "g.jsonl"),
            "--llm",
            str(tmp_path / "l.jsonl"),
            "--labels",
            str(tmp_path / "labels.json"),
            "--budget",
            "1.0",
            "--pretrain-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--out",
            str(tmp_path / "ckpt"),
            "--version",
            "t1",
            "--set",
            "tau=0.2",
            "--set",
            "distill_weight=0.5",
            "--publish",
        ],
        env={
            "PARLEY_TRAIN_LOG_FORMAT": "json",
            "PARLEY_TRAIN_REGISTRY_URI": str(tmp_path / "registry"),
            "PARLEY_TOPIC_MODEL_EVENTS": topic,
            "PARLEY_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        },
    )
    assert result.exit_code == 0, result.output
    bundle = Registry(str(tmp_path / "registry")).open("student", "t1")
    assert (bundle.path / "model.onnx").is_file()

    async def announced() -> list[Any]:
        try:
            return [
                decode_model_event(r.value)
                async for r in read(
                    kafka_settings, topic, start="beginning", max_messages=1, idle_timeout_s=15
                )
            ]
        finally:
            await delete_topics(kafka_settings, [topic])

    [event] = asyncio.run(announced())
    assert isinstance(event, ModelTrained)
    assert (event.model, event.version) == ("student", "t1")
    assert event.bundle_uri.endswith("student/t1")
    config = read_checkpoint(tmp_path / "ckpt")[0].training.config
    assert (config["tau"], config["distill_weight"]) == (0.2, 0.5)
    checked = CliRunner().invoke(cli, ["engine", "check-manifest", str(tmp_path / "ckpt")])
    assert checked.exit_code == 0, checked.output
    assert "student/t1" in checked.output
    evaluated = CliRunner().invoke(
        cli,
        [
            "train",
            "evaluate",
            str(tmp_path / "ckpt"),
            "--utterances",
            str(tmp_path / "u.jsonl"),
            "--gold",
            str(tmp_path / "g.jsonl"),
            "--llm",
            str(tmp_path / "l.jsonl"),
            "--out",
            str(tmp_path / "report"),
        ],
        env={"PARLEY_TRAIN_LOG_FORMAT": "json"},
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "teacher accuracy" in report
    assert (tmp_path / "report" / "confusion-sentiment.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics[0]["teacher"]["accuracy"] == 1.0  # the test's LLM records are its gold labels
    history = json.loads((tmp_path / "ckpt" / "history.json").read_text())
    assert [h["stage"] for h in history] == [0.0, 1.0]  # one pretraining and one fine-tuning epoch
    assert "![training loss and dev macro-F1 per epoch](learning-curve.png)" in report
    assert (tmp_path / "report" / "learning-curve.png").stat().st_size > 1000


def context_dataset(n_dialogues: int = 60, seed: int = 1) -> Dataset:
    """Each answer's label is the class of the *previous* turn's words; the answer itself is the same
    neutral text every time, so only a model that reads the context can beat chance."""
    rng = random.Random(seed)
    utterances, gold, ensemble = {}, {}, {}
    for d in range(n_dialogues):
        split = "test" if d >= n_dialogues - 12 else "train"
        for pair in range(3):
            label = rng.choice(LABELS)
            question = " ".join(rng.choice(WORDS[label]) for _ in range(3))
            q, a = f"d{d}-{2 * pair}", f"d{d}-{2 * pair + 1}"
            utterances[q] = Utterance(q, f"d{d}", 2 * pair, question, split)
            utterances[a] = Utterance(a, f"d{d}", 2 * pair + 1, "okay i see", split)
            gold[a] = label
            ensemble[a] = [0.7 if name == label else 0.15 for name in LABELS]
    return Dataset(utterances, {"sentiment": LABELS}, {"sentiment": gold}, {"sentiment": ensemble})


@pytest.mark.slow
def test_context_turns_let_the_student_read_the_previous_turn(tmp_path: Path) -> None:
    data = context_dataset()
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    scores = {}
    for turns in (0, 1):
        config = FitConfig(
            method="ce_human",
            finetune_epochs=8,
            lr=3e-3,
            head_lr=3e-3,
            batch_size=16,
            max_length=24,
            patience=8,
            context_turns=turns,
        )
        trainer = Trainer(data, split, split.train, config, model=tiny_student())
        result = trainer.fit(tmp_path / f"ckpt-{turns}")
        scores[turns] = trainer.evaluate(split.test)["sentiment/accuracy"]
    assert scores[1] > 0.6, scores  # reads the question before the answer
    assert scores[0] < 0.5, scores  # the answer alone says nothing
    assert read_checkpoint(result.checkpoint)[0].training.config["context_turns"] == 1

    # Served as the worker serves it (text + previous turn, None for a first turn), the bundle's ONNX
    # engine predicts what the trainer predicted: training and serving encode pairs alike.
    import numpy as np

    from engines.base import load_engine
    from engines.bundle import Bundle
    from engines.export import build_bundle

    bundle = Bundle.open(build_bundle(result.checkpoint, tmp_path / "staging", [{"text": "hello"}]))
    assert bundle.manifest.context_turns == 1
    utts, trained = trainer.predict(split.test)
    contexts = [trainer.context.get(u.id) or None for u in utts]
    assert contexts.count(None) == len({u.dialogue_id for u in utts})  # first turns have none
    with load_engine(bundle, "onnxruntime") as engine:
        served = engine.infer([u.text for u in utts], contexts)
    assert np.abs(served["sentiment"] - trained["sentiment"]).max() < 1e-4


def test_context_is_the_second_text_and_truncation_spares_the_utterance() -> None:
    data = context_dataset(16)
    split = split_by_dialogue(data, dev_fraction=0.5, seed=0)
    config = FitConfig(method="ce_human", max_length=12, context_turns=1)
    trainer = Trainer(data, split, split.train, config, model=tiny_student())
    answer = data.utterances["d0-1"]
    long_question = Utterance("d0-0", "d0", 0, " ".join(["terrible"] * 40), "train")
    trainer.context["d0-1"] = long_question.text
    enc = trainer._encode([answer])
    ids = enc["input_ids"][0].tolist()
    assert len(ids) == 12
    text = trainer.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("okay i see")
    assert "terrible" in text
    # an utterance too long to leave room for context is cut itself, and its context dropped
    rambling = Utterance("d0-3", "d0", 3, " ".join(["fine"] * 40), "train")
    trainer.context["d0-3"] = "terrible terrible"
    ids = trainer._encode([rambling])["input_ids"][0].tolist()
    assert len(ids) == 12
    assert trainer.tokenizer.decode(ids, skip_special_tokens=True) == " ".join(["fine"] * 9)
    with pytest.raises(TrainError, match="context_turns"):
        FitConfig(context_turns=-1)


def test_settings_from_the_command_line_are_typed_and_checked() -> None:
    """`fit --set NAME=VALUE`: values take the setting's type; unknown names and bad values are refused
    with the reason."""
    assert FitConfig.parse_overrides(["tau=0.25", "form=hinge", "pairs-per-utterance=12", "encoder="]) == {
        "tau": 0.25,
        "form": "hinge",
        "pairs_per_utterance": 12,
        "encoder": None,
    }
    with pytest.raises(TrainError, match=r"NAME=VALUE with NAME one of .*alpha"):
        FitConfig.parse_overrides(["temperature=2"])
    with pytest.raises(TrainError, match="pairs_per_utterance must be int"):
        FitConfig.parse_overrides(["pairs_per_utterance=many"])
    with pytest.raises(TrainError, match="form must be one of softplus, hinge"):
        FitConfig.parse_overrides(["form=cosine"])
    with pytest.raises(TrainError, match="distill_weight and joint_lambda"):
        FitConfig(distill_weight=-1.0)


def test_distill_weight_adds_exactly_the_kl_term_to_the_pairwise_loss() -> None:
    """With distill_weight w the LLM-stage loss of the method is pairwise + w·KL(ensemble ‖ student),
    on the same sampled pairs."""
    from train.losses import SoftLabelDistillationLoss

    data = synthetic(14)
    split = split_by_dialogue(data, dev_fraction=0.25, seed=0)
    batch = [u for u in data.utterances.values() if u.dialogue_id in {"d0", "d1"}]
    losses = []
    for weight in (0.0, 2.0):
        trainer = Trainer(
            data,
            split,
            split.train,
            FitConfig(method="method", max_length=16, distill_weight=weight),
            model=tiny_student(),
        )
        trainer.model.eval()
        with torch.no_grad():
            logits = trainer.model(**trainer._encode(batch))
            losses.append(trainer._llm_loss(logits, batch, torch.Generator().manual_seed(0)))
    teacher = torch.tensor([data.ensemble["sentiment"][u.id] for u in batch])
    kl = SoftLabelDistillationLoss()(logits["sentiment"], teacher)
    assert float(kl) > 0
    assert torch.allclose(losses[1] - losses[0], 2.0 * kl, atol=1e-6)
