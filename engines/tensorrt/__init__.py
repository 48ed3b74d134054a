"""TensorRT: plans compiled per GPU architecture and TensorRT version, run on a CUDA stream.

Needs an NVIDIA GPU (Turing or newer), the ``tensorrt`` wheel and ``cuda-python`` (the ``gpu`` extra).
"""
