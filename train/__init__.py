"""train: the student classifier, learned from LLM prompt-bank labels and a few human labels.

See docs/training.md: LLM ensemble scores (docs/labelling.md), intra-dialogue preference
pretraining, then fine-tuning on human labels. torch and transformers come with the ``train`` extra.
"""
