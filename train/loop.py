"""The training loop: LLM-label pretraining, then human fine-tuning, for the method and the baselines.

    method       pairwise preference loss on intra-dialogue pairs of LLM ensemble scores, then CE on humans
    ce_human     CE on the human labels only (no LLM stage)
    ce_llm_hard  CE on the ensemble's top label, then CE on humans
    distill      KL to the ensemble distribution, then CE on humans
    gce          GCE on the ensemble's top label, then CE on humans

Both stages run the same loop: AdamW with linear warm-up and decay, gradient accumulation, mixed
precision on CUDA, early stopping on the development dialogues' macro-F1 (human labels). Batches hold
whole dialogues (long ones cut into windows), so every utterance has partners for the pairwise loss.
The best model is written as a checkpoint (engines.checkpoint) whose manifest carries the config, the
label maps, the data fingerprints and the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args, get_origin, get_type_hints

import numpy as np
import structlog
import torch
from torch import Tensor
from torch.nn import functional as F

from engines.checkpoint import write_checkpoint
from engines.manifest import BundleManifest, TaskSpec
from engines.tokenize import Tokenizer
from engines.torch.model import StudentModel, default_encoder, output_name
from train.data import Dataset, Split, Utterance
from train.errors import TrainError
from train.evaluate import macro_f1, mean_auc
from train.losses import (
    GeneralizedCrossEntropyLoss,
    PairwisePreferenceLoss,
    SoftLabelDistillationLoss,
    sample_pairs,
)

log = structlog.get_logger(__name__)

Method = Literal["method", "ce_human", "ce_llm_hard", "distill", "gce"]
METHODS: tuple[Method, ...] = ("method", "ce_human", "ce_llm_hard", "distill", "gce")


@dataclass(frozen=True)
class FitConfig:
    method: Method = "method"
    model_name: str = "student"
    version: str = "dev"
    encoder: str | None = None
    """Hub id or local path; the packaged all-MiniLM-L6-v2 by default."""
    max_length: int = 64
    context_turns: int = 0
    """Previous turns of the dialogue given to the encoder as the second text of a pair (0: none)."""
    alpha: float = 1.0
    tau: float = 0.1
    form: Literal["softplus", "hinge", "soft"] = "softplus"
    gap: Literal["prob", "log"] = "prob"
    """The teacher's gap: a difference of probabilities, or of log-scores (the student's scale)."""
    gap_clip: float = 4.0
    """With log gaps: gaps clipped to ±this many nats."""
    pair_mean: Literal["entries", "classes"] = "entries"
    """Average the pairwise loss over (pair, class) entries, or per class and then over classes."""
    agreement: Literal["none", "filter", "weight"] = "none"
    """Noise reduction across the prompt bank: keep or weight a pair by how many prompts share the
    ensemble's order of it."""
    min_agreement: float = 0.75
    """With agreement=filter: the share of prompts that must agree."""
    calibrate_prompts: Literal["off", "temperature"] = "off"
    """Temper each prompt's scores on the human budget before averaging (train/calibration.py)."""
    pairs_per_utterance: int = 4
    joint_lambda: float = 0.0
    """Keep λ·pairwise during fine-tuning (0: plain CE)."""
    joint_scope: Literal["budget", "all"] = "budget"
    """With joint_lambda: the LLM loss on the human batch's own utterances (``budget``), or on a
    batch drawn from all LLM-labelled training dialogues beside each human batch (``all``)."""
    distill_weight: float = 0.0
    """With the method, add this × KL(ensemble ‖ student) to the pairwise loss of the LLM stage: the
    pairs teach the ranking across utterances, the KL the distribution within one (0: pairs alone)."""
    head_calibration: Literal["off", "bias"] = "off"
    """After the LLM stage, refit each head's bias on the budget's human labels, encoder and head
    weights frozen (a convex fit of one number per class): the class levels the LLM stage left unset
    (pairs) or skewed (a biased teacher) come from the humans before fine-tuning starts. Any
    LLM-using method can take it."""
    pretrain_epochs: int = 1
    finetune_epochs: int = 5
    pretrain_select: Literal["auc", "macro_f1"] = "auc"
    """The development metric that picks the LLM stage's best epoch (and stops it early): the mean
    one-vs-rest AUC per class, which a ranking-trained student can score before its class levels
    are set, or macro-F1. Fine-tuning always picks on macro-F1, the product's metric."""
    lr: float = 5e-5
    head_lr: float = 1e-3
    warmup_ratio: float = 0.1
    batch_size: int = 32
    dialogue_window: int = 32
    grad_accum: int = 1
    patience: int = 2
    seed: int = 13
    device: str = "cpu"
    gce_q: float = 0.7

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainError(f"unknown method {self.method!r}; use one of {METHODS}")
        if self.context_turns < 0:
            raise TrainError(f"context_turns must be 0 or more, not {self.context_turns}")
        if self.distill_weight < 0 or self.joint_lambda < 0:
            raise TrainError("distill_weight and joint_lambda must be 0 or more")

    @staticmethod
    def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
        """``["tau=0.2", "form=hinge"]`` → typed settings, with a clear error for an unknown name or a
        value of the wrong type (``parley train fit --set``)."""
        hints = get_type_hints(FitConfig)
        settable = sorted(set(hints) - {"method", "seed"})
        out: dict[str, Any] = {}
        for pair in pairs:
            name, sep, raw = pair.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in settable:
                raise TrainError(f"{pair!r}: use NAME=VALUE with NAME one of {', '.join(settable)}")
            kind = hints[name]
            try:
                if kind is int:
                    out[name] = int(raw)
                elif kind is float:
                    out[name] = float(raw)
                elif get_origin(kind) is Literal:
                    if raw not in get_args(kind):
                        raise ValueError(f"one of {', '.join(get_args(kind))}")
                    out[name] = raw
                else:  # str or str | None
                    out[name] = raw or None
            except ValueError as e:
                wanted = str(e) if get_origin(kind) is Literal else getattr(kind, "__name__", str(kind))
                raise TrainError(f"{pair!r}: {name} must be {wanted}") from None
        return out


@dataclass
class FitResult:
    checkpoint: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(
    utterances: Sequence[Utterance], batch_size: int, window: int, rng: random.Random
) -> Iterator[list[Utterance]]:
    """Batches of whole dialogue windows (≤ ``window`` consecutive turns), about ``batch_size`` each."""
    by_dialogue: dict[str, list[Utterance]] = {}
    for u in utterances:
        by_dialogue.setdefault(u.dialogue_id, []).append(u)
    chunks = []
    for us in by_dialogue.values():
        us.sort(key=lambda u: u.turn)
        chunks += [us[i : i + window] for i in range(0, len(us), window)]
    rng.shuffle(chunks)
    batch: list[Utterance] = []
    for chunk in chunks:
        batch += chunk
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class Trainer:
    def __init__(
        self,
        data: Dataset,
        split: Split,
        human_dialogues: Sequence[str],
        config: FitConfig,
        model: StudentModel | None = None,
        on_step: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.data, self.split, self.config = data, split, config
        self.tasks = list(data.labels)
        self.encoder = config.encoder or default_encoder()
        self.tokenizer = AutoTokenizer.from_pretrained(self.encoder)
        torch.manual_seed(config.seed)
        self.model = model or StudentModel.from_encoder(
            self.encoder, [(t, len(data.labels[t])) for t in self.tasks]
        )
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainError(
                f"device {config.device!r} asked for, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}); use --device cpu"
            )
        self.model.to(self.device)
        self.human = set(human_dialogues)
        self.on_step = on_step or (lambda _: None)
        self.pairwise = PairwisePreferenceLoss(
            config.alpha,
            config.tau,
            config.form,
            gap=config.gap,
            clip=config.gap_clip,
            mean=config.pair_mean,
            agreement=config.agreement,
            min_agreement=config.min_agreement,
        )
        self.temperatures: dict[str, dict[str, float]] = {}
        if config.calibrate_prompts == "temperature" and data.prompts:
            from train.calibration import calibrate_prompts

            human_ids = [
                u.id
                for u in data.utterances.values()
                if u.dialogue_id in self.human and u.dialogue_id in set(split.train)
            ]
            self.data, self.temperatures = calibrate_prompts(data, human_ids)
            log.info("prompts calibrated", temperatures=self.temperatures)
        self._prompt_ids = {
            t: sorted({p for rows in by_id.values() for p in rows}) for t, by_id in self.data.prompts.items()
        }
        self.distill = SoftLabelDistillationLoss()
        self.gce = GeneralizedCrossEntropyLoss(config.gce_q)
        self.history: list[dict[str, float]] = []
        self.head_offsets: dict[str, list[float]] = {}
        self.context: dict[str, str] = {}
        self._pairs: Tokenizer | None = None
        if config.context_turns > 0:
            self._pairs = Tokenizer.from_hf(self.tokenizer, config.max_length, _inputs(self.model))
            for turns in data.dialogues().values():
                for k, u in enumerate(turns):
                    previous = turns[max(0, k - config.context_turns) : k]
                    self.context[u.id] = " ".join(p.text for p in previous)

    # -- data -------------------------------------------------------------------------------------
    def _encode(self, batch: Sequence[Utterance]) -> dict[str, Tensor]:
        texts = [u.text for u in batch]
        if self._pairs is not None:  # exactly the engines' pair encoding (engines/tokenize.py)
            [padded] = self._pairs.batches(
                texts, [self.context.get(u.id, "") for u in batch], max_batch=len(batch), bucket=False
            )
            return {k: torch.from_numpy(v).to(self.device) for k, v in padded.feeds.items()}
        else:
            enc = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
            )
        return {
            k: v.to(self.device)
            for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }

    def _utterances(self, dialogues: set[str], need: Callable[[Utterance], bool]) -> list[Utterance]:
        return [u for u in self.data.utterances.values() if u.dialogue_id in dialogues and need(u)]

    # -- losses -----------------------------------------------------------------------------------
    def _llm_loss(
        self, logits: dict[str, Tensor], batch: Sequence[Utterance], generator: torch.Generator
    ) -> Tensor:
        total = torch.zeros((), device=self.device)
        method = self.config.method
        for task in self.tasks:
            scores = self.data.ensemble.get(task, {})
            rows = [i for i, u in enumerate(batch) if u.id in scores]
            if not rows:
                continue
            idx = torch.tensor(rows, device=self.device)
            teacher = torch.tensor(
                [scores[batch[i].id] for i in rows], device=self.device, dtype=torch.float32
            )
            student = logits[task][idx]
            if method == "method":
                index = {d: k for k, d in enumerate(dict.fromkeys(batch[i].dialogue_id for i in rows))}
                dialogue_ids = torch.tensor([index[batch[i].dialogue_id] for i in rows])
                i, j = sample_pairs(dialogue_ids, self.config.pairs_per_utterance, generator)
                members = self._member_scores(task, [batch[k] for k in rows])
                total = total + self.pairwise(student, teacher, i.to(self.device), j.to(self.device), members)
                if self.config.distill_weight > 0:
                    total = total + self.config.distill_weight * self.distill(student, teacher)
            elif method == "distill":
                total = total + self.distill(student, teacher)
            elif method == "gce":
                total = total + self.gce(student, teacher.argmax(1))
            else:  # ce_llm_hard
                total = total + F.cross_entropy(student, teacher.argmax(1))
        return total

    def _member_scores(self, task: str, utterances: Sequence[Utterance]) -> Tensor | None:
        """[N, K, C] each prompt's normalised scores (NaN where a prompt gave none), when the loss
        needs the prompt bank."""
        if self.config.agreement == "none":
            return None
        members = self._prompt_ids.get(task, [])
        by_id = self.data.prompts.get(task, {})
        n_labels = len(self.data.labels[task])
        out = np.full((len(utterances), max(len(members), 1), n_labels), np.nan, dtype=np.float32)
        for row, u in enumerate(utterances):
            for k, prompt in enumerate(members):
                scores = by_id.get(u.id, {}).get(prompt)
                if scores is not None:
                    total = sum(scores) or 1.0
                    out[row, k] = [v / total for v in scores]
        return torch.from_numpy(out).to(self.device)

    def _human_loss(self, logits: dict[str, Tensor], batch: Sequence[Utterance]) -> Tensor:
        total = torch.zeros((), device=self.device)
        for task in self.tasks:
            gold = self.data.gold.get(task, {})
            rows = [
                (i, self.data.labels[task].index(gold[u.id])) for i, u in enumerate(batch) if gold.get(u.id)
            ]
            if rows:
                idx = torch.tensor([r[0] for r in rows], device=self.device)
                target = torch.tensor([r[1] for r in rows], device=self.device)
                total = total + F.cross_entropy(logits[task][idx], target)
        return total

    # -- the loop ---------------------------------------------------------------------------------
    def _stage(
        self,
        name: str,
        utterances: list[Utterance],
        epochs: int,
        loss_fn: Callable[[dict[str, Tensor], list[Utterance], torch.Generator], Tensor],
    ) -> dict[str, float]:
        cfg = self.config
        if not utterances or epochs == 0:
            return self.evaluate(self.split.dev)
        rng = random.Random(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        steps_per_epoch = math.ceil(len(utterances) / cfg.batch_size / cfg.grad_accum)
        total_steps = max(steps_per_epoch * epochs, 1)
        head_params = list(self.model.heads.parameters())
        head_ids = {id(p) for p in head_params}
        body = [p for p in self.model.parameters() if id(p) not in head_ids]
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}]
        )
        warmup = int(total_steps * cfg.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(1.0, (s + 1) / max(warmup, 1)) * max(0.0, (total_steps - s) / total_steps),
        )
        amp = self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        best, best_state, since_best = -1.0, None, 0
        metrics: dict[str, float] = {}
        for epoch in range(epochs):
            self.model.train()
            started, seen, running = time.perf_counter(), 0, 0.0
            optimizer.zero_grad()
            for step, batch in enumerate(
                _batches(utterances, cfg.batch_size, cfg.dialogue_window, rng), start=1
            ):
                with torch.autocast(self.device.type, enabled=amp):
                    loss = loss_fn(self.model(**self._encode(batch)), batch, generator) / cfg.grad_accum
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                if step % cfg.grad_accum == 0:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad()
                    scheduler.step()
                seen += len(batch)
                value = float(loss.detach()) * cfg.grad_accum
                running += value
                self.on_step(
                    {
                        "stage": 0.0 if name == "pretrain" else 1.0,
                        "loss": value,
                        "utt_per_s": seen / (time.perf_counter() - started),
                    }
                )
            metrics = self.evaluate(self.split.dev)
            f1 = _task_mean(metrics, self.tasks, "macro_f1")
            auc = _task_mean(metrics, self.tasks, "auc")
            # AUC needs both sides of a class in dev; without them the stage falls back on macro-F1
            by_auc = name == "pretrain" and cfg.pretrain_select == "auc" and not math.isnan(auc)
            score = auc if by_auc else f1
            self.history.append(
                {
                    "stage": float(name == "finetune"),
                    "epoch": epoch,
                    "train_loss": running / max(step, 1),
                    "dev_macro_f1": f1,
                    "dev_auc": auc,
                }
            )
            log.info(
                "epoch",
                stage=name,
                epoch=epoch,
                train_loss=round(running / max(step, 1), 4),
                dev_macro_f1=round(f1, 4),
                dev_auc=round(auc, 4),
                seconds=round(time.perf_counter() - started, 1),
            )
            if score > best:
                best, since_best = score, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                since_best += 1
                if since_best > cfg.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return metrics

    def fit(self, out_dir: Path, write: bool = True, pretrained: Path | None = None) -> FitResult:
        """Train both stages; with ``write``, save the best model as a checkpoint in ``out_dir``.

        ``pretrained`` caches the LLM stage, which does not depend on the human budget: an existing
        file is loaded instead of pretraining, a missing one is written after pretraining. The
        caller keys it (method, seed, settings, data); a grid over budgets pretrains once per seed.
        """
        cfg = self.config
        started = time.perf_counter()
        train = set(self.split.train)
        if cfg.method != "ce_human":
            if pretrained is not None and pretrained.is_file():
                self.model.load_state_dict(torch.load(pretrained, map_location=self.device))
                log.info("pretrained stage loaded", path=str(pretrained))
            else:
                llm_utts = self._utterances(
                    train, lambda u: any(u.id in s for s in self.data.ensemble.values())
                )
                if not llm_utts:
                    raise TrainError(
                        f"method {cfg.method!r} needs LLM label records for the training utterances"
                    )
                self._stage("pretrain", llm_utts, cfg.pretrain_epochs, self._llm_loss)
                if pretrained is not None:
                    pretrained.parent.mkdir(parents=True, exist_ok=True)
                    partial = pretrained.with_suffix(".partial")
                    torch.save(self.model.state_dict(), partial)
                    partial.replace(pretrained)
        torch.manual_seed(cfg.seed + 1)  # the same fine-tuning whether the LLM stage ran or was loaded
        human_utts = self._utterances(
            self.human & train, lambda u: any(u.id in g for g in self.data.gold.values())
        )
        if not human_utts:
            raise TrainError("the human-label budget selects no labelled training utterance")
        if cfg.head_calibration == "bias" and cfg.method != "ce_human":
            self.head_offsets = self.calibrate_heads(human_utts)
            log.info("heads calibrated", offsets=self.head_offsets)

        llm_batches = self._llm_batches(train) if cfg.joint_lambda > 0 and cfg.joint_scope == "all" else None

        def finetune_loss(logits: dict[str, Tensor], batch: list[Utterance], gen: torch.Generator) -> Tensor:
            loss = self._human_loss(logits, batch)
            if cfg.joint_lambda > 0 and llm_batches is not None:
                extra = next(llm_batches)
                loss = loss + cfg.joint_lambda * self._llm_loss(self.model(**self._encode(extra)), extra, gen)
            elif cfg.joint_lambda > 0:
                loss = loss + cfg.joint_lambda * self._llm_loss(logits, batch, gen)
            return loss

        self._stage("finetune", human_utts, cfg.finetune_epochs, finetune_loss)
        metrics = {f"dev/{k}": v for k, v in self.evaluate(self.split.dev).items()}
        seconds = time.perf_counter() - started
        metrics["train_seconds"] = seconds
        if not write:
            return FitResult(out_dir, metrics, self.history, seconds)
        manifest = BundleManifest(
            model=cfg.model_name,
            version=cfg.version,
            created_at=datetime.now(UTC),
            base_model=self.encoder,
            tasks=[TaskSpec(name=t, labels=self.data.labels[t], output=output_name(t)) for t in self.tasks],
            max_length=cfg.max_length,
            context_turns=cfg.context_turns,
            inputs=_inputs(self.model),
            code_revision="unknown",
            training={"config": {k: v for k, v in asdict(cfg).items()}, "metrics": metrics},
            data_fingerprints={"utterances": _fingerprint(sorted(self.data.utterances))},
        )
        path = write_checkpoint(self.model.cpu().eval(), self.encoder, manifest, out_dir)
        self.model.to(self.device)  # written from CPU; the trainer keeps predicting on its device
        (path / "history.json").write_text(json.dumps(self.history, indent=2))
        learning_curve_png(self.history, path / "learning-curve.png")
        return FitResult(path, metrics, self.history, seconds)

    def calibrate_heads(self, utterances: Sequence[Utterance], l2: float = 0.01) -> dict[str, list[float]]:
        """Add to each head's bias the offsets minimising the cross-entropy of the gold labels of
        ``utterances`` (+ ``l2``·‖offset‖², so a class the budget lacks is lowered, not sent to −∞);
        nothing else moves. Returns the offsets per task."""
        logits = self._logits(utterances)
        offsets: dict[str, list[float]] = {}
        for task in self.tasks:
            gold, labels = self.data.gold.get(task, {}), self.data.labels[task]
            rows = [
                (k, labels.index(gold[u.id])) for k, u in enumerate(utterances) if gold.get(u.id) in labels
            ]
            if not rows:
                continue
            found = _bias_offsets(logits[task][[k for k, _ in rows]], np.array([y for _, y in rows]), l2)
            with torch.no_grad():
                head = cast(torch.nn.Linear, self.model.heads[task])
                head.bias.add_(found.to(head.bias.device, head.bias.dtype))
            offsets[task] = [round(float(v), 4) for v in found]
        return offsets

    def _llm_batches(self, train: set[str]) -> Iterator[list[Utterance]]:
        """Endless dialogue-window batches of the LLM-labelled training utterances (joint_scope=all)."""
        utterances = self._utterances(train, lambda u: any(u.id in s for s in self.data.ensemble.values()))
        if not utterances:
            raise TrainError("joint_scope=all needs LLM label records for the training utterances")
        rng = random.Random(self.config.seed + 2)
        while True:
            yield from _batches(utterances, self.config.batch_size, self.config.dialogue_window, rng)

    def predict(self, dialogues: Sequence[str]) -> tuple[list[Utterance], dict[str, np.ndarray]]:
        return self.predict_utterances(self._utterances(set(dialogues), lambda u: True))

    def predict_utterances(self, utts: Sequence[Utterance]) -> tuple[list[Utterance], dict[str, np.ndarray]]:
        utts = list(utts)
        logits = self._logits(utts)
        return utts, {t: torch.softmax(torch.from_numpy(v), 1).numpy() for t, v in logits.items()}

    @torch.inference_mode()
    def _logits(self, utts: Sequence[Utterance]) -> dict[str, np.ndarray]:
        """Each task's logits [N, C] (float32, eval mode: no dropout) for ``utts``, in order."""
        self.model.eval()
        out: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        for start in range(0, len(utts), 64):
            batch = utts[start : start + 64]
            logits = self.model(**self._encode(batch))
            for t in self.tasks:
                out[t].append(logits[t].float().cpu().numpy())
        return {
            t: np.concatenate(v) if v else np.zeros((0, len(self.data.labels[t])), dtype=np.float32)
            for t, v in out.items()
        }

    def evaluate(self, dialogues: Sequence[str]) -> dict[str, float]:
        utts, probs = self.predict(dialogues)
        metrics = {}
        for t in self.tasks:
            gold = self.data.gold.get(t, {})
            rows = [(i, self.data.labels[t].index(gold[u.id])) for i, u in enumerate(utts) if gold.get(u.id)]
            if not rows:
                metrics[f"{t}/accuracy"] = metrics[f"{t}/macro_f1"] = metrics[f"{t}/auc"] = float("nan")
                continue
            idx = np.array([r[0] for r in rows])
            truth = np.array([r[1] for r in rows])
            pred = probs[t][idx].argmax(1)
            metrics[f"{t}/accuracy"] = float((pred == truth).mean())
            metrics[f"{t}/macro_f1"] = macro_f1(pred, truth, len(self.data.labels[t]))
            metrics[f"{t}/auc"] = mean_auc(probs[t][idx], truth)
        return metrics


def _bias_offsets(scores: np.ndarray, truth: np.ndarray, l2: float) -> Tensor:
    """Offsets b minimising CE(logits + b, truth) + l2·‖b‖², centred (softmax ignores a shift). The
    penalty is on the mean CE, so it does not fade as the budget grows: it only keeps a class the
    budget lacks finite."""
    logits = torch.from_numpy(scores).double()
    target = torch.from_numpy(truth).long()
    offset = torch.zeros(scores.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([offset], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits + offset, target) + l2 * (offset**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return (offset - offset.mean()).detach()


def _task_mean(metrics: dict[str, float], tasks: Sequence[str], metric: str) -> float:
    """The mean of one metric over the tasks that could be scored (NaN: no gold label there)."""
    values = [metrics[f"{t}/{metric}"] for t in tasks if not math.isnan(metrics[f"{t}/{metric}"])]
    return float(np.mean(values)) if values else float("nan")


def _inputs(model: StudentModel) -> list[str]:
    return (
        ["input_ids", "attention_mask", "token_type_ids"]
        if model.uses_token_type_ids
        else ["input_ids", "attention_mask"]
    )


def _fingerprint(items: Sequence[Any]) -> str:
    return hashlib.sha256("\n".join(map(str, items)).encode()).hexdigest()


def learning_curve_png(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Training loss and development macro-F1 per epoch, pretraining then fine-tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(6, 3.5))
    x = list(range(1, len(history) + 1))
    loss_ax.plot(x, [h["train_loss"] for h in history], "o-", color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch (pretraining, then fine-tuning)")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    f1_ax = loss_ax.twinx()
    f1_ax.plot(x, [h["dev_macro_f1"] for h in history], "s-", color="tab:orange", label="dev macro-F1")
    f1_ax.set_ylabel("dev macro-F1 (mean over tasks)", color="tab:orange")
    switch = next((k for k, h in enumerate(history) if h["stage"]), None)
    if switch:
        loss_ax.axvline(switch + 0.5, color="grey", linestyle="--")
        loss_ax.text(switch + 0.55, loss_ax.get_ylim()[1], "fine-tuning", va="top", fontsize=8, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
