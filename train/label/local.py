"""A local causal LM as a labelling backend: each label is scored by its likelihood as the answer.

For a prompt p and a label ℓ (tokens t₁…t_k, then the end-of-turn token), the score is
log P(t₁…t_k, end | p); a softmax over the task's labels turns them into a distribution. Nothing is
generated, so every answer is a label: a small model that cannot follow the answer format still
gives usable (if weak) scores. The prompt runs once; its key/value cache is repeated for the labels,
which run together as one batch of short continuations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from train.label.backend import Answer, LabelRequest
from train.label.causal_lm import load_causal_lm
from train.label.spec import Rendered


class LocalBackend:
    kind = "local"

    def __init__(
        self,
        model: str | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        max_prompt_tokens: int = 1024,
        loaded: tuple[Any, Any, str] | None = None,
        calibrate: bool = False,
    ) -> None:
        """``loaded``: an already loaded (tokenizer, model, name), to share one model between users.
        ``calibrate``: divide each label's likelihood by its likelihood for a content-free utterance
        ("N/A") under the same prompt, which removes the prompt's own bias towards some labels
        (contextual calibration, Zhao et al. 2021); weak models need it most."""
        self.tokenizer, self.lm, self.model = loaded or load_causal_lm(model, device)
        self.calibrate = calibrate
        self.kind = "local-calibrated" if calibrate else "local"
        self._content_free: dict[tuple[Rendered, tuple[str, ...]], Any] = {}
        self._label_tokens: dict[tuple[str, ...], list[list[int]]] = {}
        self.device = device
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = asyncio.Lock()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return None

    async def score(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        async with self._lock:  # one model, one batch at a time; the event loop stays free
            return await asyncio.to_thread(self.score_sync, requests)

    def _chat(self, request: LabelRequest) -> str:
        messages = request.prompt.messages()
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        return "\n\n".join(m["content"] for m in messages) + "\nAnswer: "

    def _label_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """Each label's tokens and the end of the answer; tokenised once per label set."""
        key = tuple(labels)
        if key not in self._label_tokens:
            end = self.tokenizer.eos_token_id
            self._label_tokens[key] = [
                self.tokenizer(label, add_special_tokens=False).input_ids + ([end] if end is not None else [])
                for label in labels
            ]
        return self._label_tokens[key]

    def score_sync(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        out: list[Answer] = []
        for start in range(0, len(requests), self.batch_size):
            out += self._batch(requests[start : start + self.batch_size])
        return out

    def _batch(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        import torch

        values, prompt_tokens = self._loglik([self._chat(r) for r in requests], [r.labels for r in requests])
        if self.calibrate:
            missing = {
                (r.calibration, r.labels)
                for r in requests
                if r.calibration is not None and (r.calibration, r.labels) not in self._content_free
            }
            if missing:
                todo = sorted(missing, key=lambda m: (m[0].system, m[0].user, m[1]))
                free, _ = self._loglik(
                    [self._chat(LabelRequest("", c, labels)) for c, labels in todo], [m[1] for m in todo]
                )
                self._content_free.update(zip(todo, free, strict=True))
        answers: list[Answer] = []
        for request, v, n in zip(requests, values, prompt_tokens, strict=True):
            if self.calibrate and request.calibration is not None:
                v = v - self._content_free[(request.calibration, request.labels)]
            probs = torch.softmax(v, 0).tolist()
            answers.append(
                Answer(
                    scores=dict(zip(request.labels, probs, strict=True)),
                    prompt_tokens=n,
                    completion_tokens=sum(len(ids) for ids in self._label_ids(request.labels)),
                )
            )
        return answers

    def _loglik(
        self, prompts: Sequence[str], label_sets: Sequence[Sequence[str]]
    ) -> tuple[list[Any], list[int]]:
        """log P(label, end | prompt) for every label of each prompt, and each prompt's token count."""
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        tok.truncation_side = "left"  # a prompt too long loses its start, never the utterance and answer cue
        enc = tok(
            list(prompts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            add_special_tokens=False,
        ).to(self.device)
        prompt_mask = enc.attention_mask
        positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            first = self.lm(
                input_ids=enc.input_ids,
                attention_mask=prompt_mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,  # only the last position's logits: B×V, not B×L×V
            )
            first_logp = torch.log_softmax(first.logits[:, -1].float(), -1)  # (B, V)
            # label continuations: row (i, ℓ) feeds t₁…t_{k-1} and predicts t₂…end
            per_prompt = [self._label_ids(labels) for labels in label_sets]
            repeats = torch.tensor([len(ids) for ids in per_prompt], device=self.device)
            rows = [ids for prompt_ids in per_prompt for ids in prompt_ids]
            width = max(len(ids) for ids in rows) - 1
            first_rows = torch.stack(
                [first_logp[i, ids[0]] for i, prompt_ids in enumerate(per_prompt) for ids in prompt_ids]
            )
            rest = torch.zeros(len(rows), device=self.device)
            if width > 0:
                pad = tok.pad_token_id
                cont = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
                cont_mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
                target = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
                for r, ids in enumerate(rows):
                    n = len(ids) - 1
                    if n:
                        cont[r, :n] = torch.tensor(ids[:-1])
                        target[r, :n] = torch.tensor(ids[1:])
                        cont_mask[r, :n] = 1
                cache = first.past_key_values
                if bool((repeats == repeats[0]).all()):
                    cache.batch_repeat_interleave(int(repeats[0]))
                else:
                    self._select(cache, repeats)
                mask = torch.cat([prompt_mask.repeat_interleave(repeats, 0), cont_mask], 1)
                start = prompt_mask.sum(1).repeat_interleave(repeats, 0)
                pos = start[:, None] + torch.arange(width, device=self.device)[None]
                logits = self.lm(
                    input_ids=cont, attention_mask=mask, position_ids=pos, past_key_values=cache
                ).logits
                logp = torch.log_softmax(logits.float(), -1).gather(2, target[..., None])[..., 0]
                rest = (logp * cont_mask).sum(1)
            total = (first_rows + rest).cpu()
        out, offset = [], 0
        for prompt_ids in per_prompt:
            out.append(total[offset : offset + len(prompt_ids)])
            offset += len(prompt_ids)
        return out, [int(n) for n in prompt_mask.sum(1)]

    @staticmethod
    def _select(cache: Any, repeats: Any) -> None:
        import torch

        index = torch.repeat_interleave(torch.arange(len(repeats), device=repeats.device), repeats)
        cache.batch_select_indices(index)
