"""LLM labelling: a bank of diverse prompts asks an LLM to label each utterance; the answers become
label records (one per utterance, task and prompt) and an ensemble score per utterance and task.

    spec.py      task specifications and prompt banks (YAML), rendering
    backend.py   the backend interface, answers, parsing of free-text answers
    local.py     a local causal LM through transformers, scoring each label by its likelihood
    http.py      any OpenAI-compatible chat-completions endpoint (logprobs, or n samples)
    cache.py     the on-disk answer cache that makes runs resumable and reruns free
    run.py       the labelling run: cache, batches, progress, records, ensemble, summary
    report.py    `label-report`: each prompt and the ensemble against gold labels
    serve.py     a small OpenAI-compatible server over a local causal LM (tests, development)
"""
