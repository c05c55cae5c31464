"""The CPU benchmarks: one module per row family of ``python -m benchmarks.run --only=NAME``.

Each times ours against a PyTorch / POT / numpy / faiss reference in one process and checks
that both give the same numbers (loss, partial, eval, psd, step + demo_step, memory, towers,
search, data). demo_step and towers also give the GPU family its shapes and tolerances.
"""
