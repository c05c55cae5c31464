"""Benchmarks of ours vs reference implementations.

``python -m benchmarks.run`` (run.py, timing.py) runs the CPU rows of ``cpu/``;
``python -m benchmarks.device.bench`` the GPU ones of ``device/``; ``references/`` holds the
PyTorch / numpy references both use.
"""
