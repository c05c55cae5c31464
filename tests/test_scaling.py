"""benchmarks.scaling: the fitted exponent of a power law and the plot it writes."""

import numpy as np
import pytest

from benchmarks.scaling import fit_exponent, plot


def test_fit_exponent_recovers_a_power_law_over_the_upper_half():
  sizes = [64, 128, 256, 512, 1024]
  # a constant overhead dominates the small sizes; the upper half follows size^2
  seconds = [1e-5 + 2e-9 * n**2 for n in sizes]
  assert fit_exponent(sizes, seconds) == pytest.approx(2.0, abs=0.15)
  assert fit_exponent([10, 20], [1.0, 8.0]) == pytest.approx(3.0)
  assert fit_exponent([10], [1.0]) is None


def test_plot_writes_a_png_with_one_exponent_per_series(tmp_path):
  from PIL import Image

  n = np.array([100, 200, 400, 800])
  series = {"a": list(zip(n, 1e-6 * n**1.0)), "b": list(zip(n, 1e-8 * n**2.0)), "c": []}
  exps = plot(series, "size", "title", tmp_path / "p.png")
  assert set(exps) == {"a", "b"}
  assert exps["a"] == pytest.approx(1.0) and exps["b"] == pytest.approx(2.0)
  with Image.open(tmp_path / "p.png") as im:
    im.verify()
