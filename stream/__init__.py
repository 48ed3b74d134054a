"""stream: the worker that labels live utterances from Kafka, and the tools around its topics.

It owns the ``utterances``, ``utterance-labels`` and ``utterances-dlq`` contracts
(:mod:`stream.contracts`). It talks to models only through ``engines``' loading interface and never
imports torch.
"""
