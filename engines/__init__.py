"""engines: the engine bundle (the contract between training and serving) and the model-events topic.

A bundle is ``REGISTRY/<model>/<version>/`` with ``manifest.json`` (:mod:`engines.manifest`),
``tokenizer/``, ``model.onnx`` and compiled plans under ``engines/``. Heavy libraries (torch,
tensorrt) are imported only inside the backend that needs them.
"""
