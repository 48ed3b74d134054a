"""A small OpenAI-compatible chat-completions server over a local causal LM (transformers).

It exists so that the HTTP backend can be exercised end to end against a real model on a machine
without a GPU or an external endpoint, and for local development. It answers
``GET /v1/models`` and ``POST /v1/chat/completions`` with ``max_tokens``, ``temperature``, ``n``,
``logprobs`` and ``top_logprobs`` (greedy decoding at temperature 0, sampling otherwise), and reports
``usage``. One request is generated at a time, off the event loop. For production volumes use vLLM.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp import web

from train.label.causal_lm import load_causal_lm


class ChatModel:
    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        served_name: str | None = None,
        loaded: tuple[Any, Any, str] | None = None,
    ) -> None:
        self.tokenizer, self.lm, name = loaded or load_causal_lm(model, device)
        self.name = served_name or name
        self.device = device
        self.lock = asyncio.Lock()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        tok = self.tokenizer
        prompt = tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        n = int(body.get("n") or 1)
        temperature = float(body.get("temperature", 1.0))
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        want_logprobs = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        sample = temperature > 0
        with torch.inference_mode():
            out = self.lm.generate(
                **enc,
                max_new_tokens=max_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=None,
                top_k=None,
                num_return_sequences=n,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
            )
        prompt_len = enc.input_ids.shape[1]
        choices, completion_tokens = [], 0
        for c in range(n):
            ids = out.sequences[c, prompt_len:].tolist()
            content_ids = []
            for t in ids:
                if t in (tok.eos_token_id, tok.pad_token_id):
                    break
                content_ids.append(t)
            completion_tokens += len(content_ids)
            choice: dict[str, Any] = {
                "index": c,
                "message": {
                    "role": "assistant",
                    "content": tok.decode(content_ids, skip_special_tokens=True),
                },
                "finish_reason": "stop" if len(content_ids) < len(ids) else "length",
                "logprobs": None,
            }
            if want_logprobs:
                entries = []
                for step, t in enumerate(content_ids):
                    logp = torch.log_softmax(out.scores[step][c].float(), -1)
                    best = torch.topk(logp, max(top, 1))
                    entries.append(
                        {
                            "token": tok.decode([t]),
                            "logprob": float(logp[t]),
                            "top_logprobs": [
                                {"token": tok.decode([int(i)]), "logprob": float(v)}
                                for v, i in zip(best.values[:top], best.indices[:top], strict=True)
                            ],
                        }
                    )
                choice["logprobs"] = {"content": entries}
            choices.append(choice)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_len,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_len + completion_tokens,
            },
        }


def make_app(model: ChatModel) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model.name, "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response(
                {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}, status=400
            )
        if body.get("model") not in (None, model.name):
            return web.json_response(
                {"error": {"message": f"model {body.get('model')!r} not found"}}, status=404
            )
        try:
            async with model.lock:
                result = await asyncio.to_thread(model.complete, body)
        except (ValueError, TypeError) as exc:  # parameters the model cannot honour: the client's error
            return web.json_response(
                {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}, status=400
            )
        return web.json_response(result)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app
