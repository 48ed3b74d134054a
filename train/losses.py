"""Training losses as ``nn.Module``s: the intra-dialogue preference loss and the baselines' losses.

Shapes: ``N`` utterances in a batch, ``C`` classes of one task.

- :class:`PairwisePreferenceLoss` — parley's reading (docs/training.md, "Losses") of "Learning LLM
  Preference over Intra-Dialogue Pairs" (Liu, Kong et al., NAACL 2025 Industry, arXiv 2503.05620): for
  utterances i, j of the same dialogue and a class c with LLM ensemble gap g = s_c(i) − s_c(j) > τ,
  the student's log-probabilities f should rank them the same way by a margin α·g:
  ``softplus(α·g − (f_c(i) − f_c(j)))`` or, as a hinge, ``relu(α·g − (f_c(i) − f_c(j)))``.
- :class:`SoftLabelDistillationLoss` — KL(teacher ‖ student) to the ensemble distribution.
- :class:`GeneralizedCrossEntropyLoss` — GCE (Zhang & Sabuncu, 2018), robust to noisy hard labels.
- Cross-entropy is ``torch.nn.CrossEntropyLoss``.

:func:`sample_pairs` draws at most ``per_utterance`` partners per utterance from its own dialogue, so
a dialogue of n turns costs O(n) pairs, not O(n²) (Switchboard dialogues average ~170 turns).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _check(name: str, tensor: Tensor, dims: int) -> None:
    if tensor.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(tensor.shape)}")


def sample_pairs(
    dialogue_ids: Tensor, per_utterance: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Index pairs (i, j), i ≠ j, both in the same dialogue: up to ``per_utterance`` partners for each i.

    ``dialogue_ids``: [N] integer dialogue of each utterance. Returns two [P] index tensors with
    P ≤ N·per_utterance. Utterances alone in their dialogue get no pair.
    """
    _check("dialogue_ids", dialogue_ids, 1)
    if per_utterance < 1:
        raise ValueError(f"per_utterance must be at least 1, got {per_utterance}")
    order = torch.argsort(dialogue_ids, stable=True)
    sorted_ids = dialogue_ids[order]
    _, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    firsts: list[Tensor] = []
    seconds: list[Tensor] = []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        if count < 2:
            continue
        members = order[start : start + count]
        # Each member picks partners among the others: a random offset in 1..count-1 never hits itself.
        k = min(per_utterance, count - 1)
        offsets = torch.stack([torch.randperm(count - 1, generator=generator)[:k] + 1 for _ in range(count)])
        partner_pos = (torch.arange(count).unsqueeze(1) + offsets) % count
        firsts.append(members.repeat_interleave(k))
        seconds.append(members[partner_pos.reshape(-1)])
    if not firsts:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return torch.cat(firsts), torch.cat(seconds)


Gap = Literal["prob", "log"]
Form = Literal["softplus", "hinge", "soft"]
PairMean = Literal["entries", "classes"]
Agreement = Literal["none", "filter", "weight"]


class PairwisePreferenceLoss(nn.Module):
    """Intra-dialogue preference loss with the LLM's score gap as an adaptive margin.

    forward(student_logits [N, C], teacher_scores [N, C], i [P], j [P], prompt_scores [N, K, C] | None)
    → scalar. Pairs (i, j) come from :func:`sample_pairs`. For every pair and class the teacher's gap
    g is taken in whichever direction is positive; only gaps > ``tau`` count (small gaps are where LLM
    noise lives). Teacher scores are constants: no gradient flows into them.

    The settings (docs/training.md, "Losses"):

    - ``gap``: ``prob`` — g = s_c(i) − s_c(j), a difference of probabilities (≤ 1) against the
      student's difference of log-probabilities, as first read; ``log`` — g = log s_c(i) − log s_c(j),
      on the student's own scale, clipped to ±``clip`` (τ is then in nats).
    - ``form``: ``softplus`` — softplus(α·g − Δf), which keeps pushing every pair apart; ``hinge`` —
      relu(α·g − Δf), which stops at the margin; ``soft`` — a logistic loss with the soft target
      σ(α·g) on Δf, whose optimum is Δf = α·g exactly: the student copies the teacher's gaps.
    - ``mean``: ``entries`` — the mean over counted (pair, class) entries (big classes dominate);
      ``classes`` — the mean within each class, then over the classes that have entries.
    - ``agreement`` (needs ``prompt_scores``, NaN where a prompt gave no score): the share of the
      prompt bank whose own gap has the ensemble's sign; ``filter`` keeps entries with a share ≥
      ``min_agreement``, ``weight`` weights each entry by its share.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        tau: float = 0.1,
        form: Form = "softplus",
        *,
        gap: Gap = "prob",
        clip: float = 4.0,
        mean: PairMean = "entries",
        agreement: Agreement = "none",
        min_agreement: float = 0.75,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be ≥ 0, got {alpha}")
        if gap not in ("prob", "log"):
            raise ValueError(f"gap must be 'prob' or 'log', got {gap!r}")
        if gap == "prob" and not 0 <= tau < 1:
            raise ValueError(f"tau must be in [0, 1) for probability gaps, got {tau}")
        if tau < 0:
            raise ValueError(f"tau must be ≥ 0, got {tau}")
        if form not in ("softplus", "hinge", "soft"):
            raise ValueError(f"form must be 'softplus', 'hinge' or 'soft', got {form!r}")
        if mean not in ("entries", "classes"):
            raise ValueError(f"mean must be 'entries' or 'classes', got {mean!r}")
        if agreement not in ("none", "filter", "weight"):
            raise ValueError(f"agreement must be 'none', 'filter' or 'weight', got {agreement!r}")
        if clip <= 0 or not 0 <= min_agreement <= 1:
            raise ValueError("clip must be > 0 and min_agreement in [0, 1]")
        self.alpha, self.tau, self.form = alpha, tau, form
        self.gap, self.clip, self.mean = gap, clip, mean
        self.agreement, self.min_agreement, self.eps = agreement, min_agreement, eps

    def forward(
        self,
        student_logits: Tensor,
        teacher_scores: Tensor,
        i: Tensor,
        j: Tensor,
        prompt_scores: Tensor | None = None,
    ) -> Tensor:
        _check("student_logits", student_logits, 2)
        if teacher_scores.shape != student_logits.shape:
            raise ValueError(
                f"teacher_scores {tuple(teacher_scores.shape)} must match student_logits "
                f"{tuple(student_logits.shape)}"
            )
        if i.shape != j.shape or i.dim() != 1:
            raise ValueError(
                f"i and j must be 1-D and equal in length, got {tuple(i.shape)}, {tuple(j.shape)}"
            )
        if self.agreement != "none":
            if prompt_scores is None:
                raise ValueError(f"agreement={self.agreement!r} needs the prompts' scores")
            _check("prompt_scores", prompt_scores, 3)
        zero = student_logits.sum() * 0.0
        if i.numel() == 0:
            return zero
        f = F.log_softmax(student_logits, dim=1)
        s = teacher_scores.detach()
        if self.gap == "log":
            t = torch.log(s.clamp_min(self.eps))
            gap = (t[i] - t[j]).clamp(-self.clip, self.clip)
        else:
            gap = s[i] - s[j]  # [P, C]
        sign = torch.sign(gap)
        student_gap = (f[i] - f[j]) * sign  # oriented so the teacher prefers the first of the pair
        margin = self.alpha * gap.abs()
        keep = gap.abs() > self.tau
        weight = torch.ones_like(gap)
        if self.agreement != "none" and prompt_scores is not None:
            ps = prompt_scores.detach()
            member_gap = ps[i] - ps[j]  # [P, K, C], NaN where a prompt is missing
            answered = ~torch.isnan(member_gap)
            agrees = (torch.sign(torch.nan_to_num(member_gap)) == sign.unsqueeze(1)) & answered
            share = agrees.sum(1) / answered.sum(1).clamp_min(1)
            if self.agreement == "filter":
                keep = keep & (share >= self.min_agreement)
            else:
                weight = share
        keep = keep & (weight > 0)
        if not bool(keep.any()):
            return zero
        if self.form == "soft":
            losses = F.binary_cross_entropy_with_logits(student_gap, torch.sigmoid(margin), reduction="none")
        else:
            raw = margin - student_gap
            losses = F.softplus(raw) if self.form == "softplus" else F.relu(raw)
        w = weight * keep
        if self.mean == "entries":
            return (losses * w).sum() / w.sum()
        per_class_w = w.sum(0)  # [C]
        present = per_class_w > 0
        per_class = (losses * w).sum(0)[present] / per_class_w[present]
        return per_class.mean()


class SoftLabelDistillationLoss(nn.Module):
    """KL(teacher ‖ student), averaged over utterances (with an optional temperature T, scaled by T²).

    forward(student_logits [N, C], teacher_probs [N, C]) → scalar; teacher rows must sum to 1.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        _check("student_logits", student_logits, 2)
        if teacher_probs.shape != student_logits.shape:
            raise ValueError(
                f"teacher_probs {tuple(teacher_probs.shape)} must match student_logits "
                f"{tuple(student_logits.shape)}"
            )
        t = self.temperature
        log_p = F.log_softmax(student_logits / t, dim=1)
        return F.kl_div(log_p, teacher_probs.detach(), reduction="batchmean") * t * t


class GeneralizedCrossEntropyLoss(nn.Module):
    """GCE: (1 − p_y^q) / q. q → 0 is cross-entropy; q = 1 is MAE, robust to label noise.

    forward(student_logits [N, C], targets [N] class indices) → scalar.
    """

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], got {q}")
        self.q = q

    def forward(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        _check("student_logits", student_logits, 2)
        _check("targets", targets, 1)
        if targets.shape[0] != student_logits.shape[0]:
            raise ValueError(f"{targets.shape[0]} targets for {student_logits.shape[0]} rows")
        p_y = F.softmax(student_logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1).clamp_min(1e-7)
        return ((1 - p_y.pow(self.q)) / self.q).mean()
