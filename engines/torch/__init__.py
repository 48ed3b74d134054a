"""The student network in PyTorch: its definition (shared with train/) and the eager reference backend.

Importing this package imports torch; nothing on the serving path imports it.
"""
