"""The reference implementations the benchmarks (CPU and GPU) and some tests compare against.

PyTorch / numpy code written from the method's description, not ours: the demo model
(torch_demo), the official m-LTM loss (torch_loss), POT's sinkhorn_knopp in torch
(torch_sinkhorn) and the PANNs Cnn10 / ResNet38 networks (torch_panns).
"""
