"""The GPU benchmark: ours vs PyTorch on one CUDA device (towers and train-step rows).

Entry point ``python -m benchmarks.device.bench`` (on the GPU machine: ``bash
benchmarks/device/run.sh``); common (environment, timing), towers, steps: its rows;
bert_probe: a separate probe of our BERT's embedding lookups.
"""
