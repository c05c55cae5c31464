"""Tests for mltm_jax.evaluation.{retrieval, plan_ranking, report}.

References: hand-built rankings, a per-query argsort loop written like the official
evaluation (numpy brute force), and POT's ot.sinkhorn.
"""

import warnings

import jax
import numpy as np
import ot
import pytest

from mltm_jax.evaluation.plan_ranking import score_matrix, sinkhorn_log_plan, sinkhorn_plan
from mltm_jax.evaluation.report import format_metrics_table
from mltm_jax.evaluation.retrieval import (
  METRIC_KEYS,
  a2t_metrics,
  a2t_ranks,
  modality_gap,
  retrieval_metrics,
  t2a_metrics,
  t2a_ranks,
)


# ---------------------------------------------------------------- brute-force references


def _summary(ranks0, ap):
  """Official-style summary from 0-based ranks and per-query AP values."""
  ranks0 = np.asarray(ranks0, dtype=np.float64)
  return {
    "R@1": 100.0 * np.mean(ranks0 < 1),
    "R@5": 100.0 * np.mean(ranks0 < 5),
    "R@10": 100.0 * np.mean(ranks0 < 10),
    "R@50": 100.0 * np.mean(ranks0 < 50),
    "medR": np.floor(np.median(ranks0)) + 1,
    "meanR": ranks0.mean() + 1,
    "mAP@10": 100.0 * np.mean(ap),
  }


def ref_t2a(d, caption_to_clip):
  ranks0, ap = [], []
  for i in range(d.shape[0]):
    inds = np.argsort(d[i])[::-1]
    r = np.where(inds == caption_to_clip[i])[0][0]
    ranks0.append(r)
    ap.append(1.0 / (r + 1) if r < 10 else 0.0)
  return _summary(ranks0, ap)


def ref_a2t(d, caption_to_clip):
  ranks0, ap = [], []
  for q in range(d.shape[0]):
    inds = np.argsort(d[q])[::-1]
    caps = np.flatnonzero(caption_to_clip == q)
    best, hits = 1e20, []
    for c in caps:
      tmp = np.where(inds == c)[0][0]
      best = min(best, tmp)
      if tmp < 10:
        hits.append(tmp + 1)
    hits = np.sort(np.array(hits))
    ap.append(np.sum(np.arange(1, len(hits) + 1) / hits) / len(caps) if len(hits) else 0.0)
    ranks0.append(best)
  return _summary(ranks0, ap)


def _assert_metrics_equal(got, want):
  assert set(got) == set(METRIC_KEYS)
  for k in METRIC_KEYS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


# ---------------------------------------------------------------- retrieval vs brute force


@pytest.mark.parametrize("chunk", [1 << 24, 37])
def test_five_captions_match_argsort_loop(chunk):
  rng = np.random.default_rng(0)
  nclips = 70
  c2c = rng.permutation(np.repeat(np.arange(nclips), 5))
  d = rng.standard_normal((5 * nclips, nclips))
  _assert_metrics_equal(t2a_metrics(d, c2c, max_chunk_elements=chunk), ref_t2a(d, c2c))
  e = rng.standard_normal((nclips, 5 * nclips))
  _assert_metrics_equal(a2t_metrics(e, c2c, max_chunk_elements=chunk), ref_a2t(e, c2c))


def test_informative_scores_match_argsort_loop():
  # Scores correlated with the truth so that R@1..R@10 and mAP@10 are far from 0.
  rng = np.random.default_rng(1)
  nclips = 40
  c2c = np.repeat(np.arange(nclips), 5)
  onehot = (c2c[:, None] == np.arange(nclips)[None, :]).astype(float)
  d = 2.0 * onehot + rng.standard_normal(onehot.shape)
  m_t2a = t2a_metrics(d, c2c)
  assert m_t2a["R@1"] > 20
  _assert_metrics_equal(m_t2a, ref_t2a(d, c2c))
  e = 2.0 * onehot.T + rng.standard_normal(onehot.T.shape)
  m_a2t = a2t_metrics(e, c2c)
  assert m_a2t["mAP@10"] > 10
  _assert_metrics_equal(m_a2t, ref_a2t(e, c2c))


def test_variable_caption_counts_match_argsort_loop():
  rng = np.random.default_rng(2)
  counts = rng.integers(1, 8, size=25)
  c2c = rng.permutation(np.repeat(np.arange(25), counts))
  e = rng.standard_normal((25, c2c.size))
  ranks, got_counts = a2t_ranks(e, c2c, max_chunk_elements=100)
  np.testing.assert_array_equal(got_counts, counts)
  real = np.arange(ranks.shape[1])[None, :] < counts[:, None]
  assert np.all((np.diff(ranks, axis=1) > 0) | ~real[:, 1:])  # sorted and distinct
  assert np.all(ranks[~real] == c2c.size + 1)  # padding
  _assert_metrics_equal(a2t_metrics(e, c2c), ref_a2t(e, c2c))
  # Per-caption ranks equal the argsort positions.
  for q in [0, 7, 24]:
    pos = np.empty(c2c.size, int)
    pos[np.argsort(-e[q])] = np.arange(1, c2c.size + 1)
    want = np.sort(pos[c2c == q])
    np.testing.assert_array_equal(ranks[q, : counts[q]], want)
    assert np.all(ranks[q, counts[q] :] == c2c.size + 1)


# ---------------------------------------------------------------- hand-built cases


def test_constant_scores_give_worst_ranks():
  nclips = 12
  c2c = np.repeat(np.arange(nclips), 5)
  np.testing.assert_array_equal(t2a_ranks(np.zeros((60, nclips)), c2c), np.full(60, nclips))
  ranks, _ = a2t_ranks(np.ones((nclips, 60)), c2c)
  np.testing.assert_array_equal(ranks, np.tile(np.arange(56, 61), (nclips, 1)))
  m = a2t_metrics(np.ones((nclips, 60)), c2c)
  assert m["R@1"] == m["R@50"] == 0.0 and m["mAP@10"] == 0.0 and m["medR"] == 56
  m = t2a_metrics(np.zeros((60, nclips)), c2c)
  assert m["R@1"] == 0.0 and m["R@10"] == 0.0 and m["R@50"] == 100.0
  assert m["medR"] == m["meanR"] == nclips and m["mAP@10"] == 0.0  # rank 12 > 10
  m = t2a_metrics(np.zeros((40, 8)), np.repeat(np.arange(8), 5))
  assert m["R@5"] == 0.0 and m["R@10"] == 100.0
  np.testing.assert_allclose(m["mAP@10"], 100.0 / 8)


def test_ties_against_distractors_are_pessimistic():
  c2c = np.array([0, 1])
  s = np.array(
    [
      [5.0, 5.0, 5.0, 1.0],  # caption 0 -> clip 0, tied with clips 1, 2
      [2.0, 3.0, 9.0, 3.0],
    ]
  )  # caption 1 -> clip 1, one better, one tied
  np.testing.assert_array_equal(t2a_ranks(s, c2c), [3, 3])


def test_a2t_tied_own_captions_take_consecutive_positions():
  c2c = np.array([0, 0, 1, 1, 1])
  s = np.array(
    [
      [7.0, 7.0, 1.0, 7.0, 0.0],  # clip 0: captions 0, 1 tied with distractor 3
      [0.0, 0.0, 4.0, 4.0, 2.0],
    ]
  )  # clip 1: duplicate top captions 2, 3
  ranks, counts = a2t_ranks(s, c2c)
  np.testing.assert_array_equal(counts, [2, 3])
  np.testing.assert_array_equal(ranks, [[2, 3, 6], [1, 2, 3]])


def test_map10_by_hand_ranks_1_3_12():
  # Clip 0's five captions sit at positions 1, 3, 12, 15, 20 of a 20-caption gallery.
  pos = {1: 0, 3: 0, 12: 0, 15: 0, 20: 0}
  c2c = np.array([0 if p in pos else 1 for p in range(1, 21)])
  s = np.tile(-np.arange(1, 21, dtype=float), (2, 1))
  ranks, counts = a2t_ranks(s, c2c)
  np.testing.assert_array_equal(ranks[0], [1, 3, 12, 15, 20] + [21] * 10)
  m = retrieval_metrics(ranks[:1], counts[:1])
  np.testing.assert_allclose(m["mAP@10"], 100.0 * (1 / 1 + 2 / 3) / 5)
  m = retrieval_metrics(np.array([[1, 3, 12, 15, 20]]), np.array([5]))
  np.testing.assert_allclose(m["mAP@10"], 100.0 * (1 / 1 + 2 / 3) / 5)
  assert m["R@1"] == 100.0 and m["medR"] == 1 and m["meanR"] == 1


def test_small_gallery_padding_not_counted():
  # Gallery of 3 captions (< 10): padding value 4 must not enter mAP@10.
  c2c = np.array([0, 0, 1])
  s = np.array([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
  m = a2t_metrics(s, c2c)
  np.testing.assert_allclose(m["mAP@10"], 100.0 * ((1 + 2 / 3) / 2 + 1.0) / 2)
  assert m["R@1"] == 100.0


def test_summary_statistics_by_hand():
  m = retrieval_metrics(np.array([1, 2, 3, 4, 60, 7, 11, 9]))
  assert m["R@1"] == 12.5 and m["R@5"] == 50.0 and m["R@10"] == 75.0 and m["R@50"] == 87.5
  assert m["medR"] == 5.0  # median 5.5 floored, as the official floor(median(r0)) + 1
  np.testing.assert_allclose(m["meanR"], 97 / 8)
  np.testing.assert_allclose(m["mAP@10"], 100.0 * (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 7 + 1 / 9) / 8)


def test_modality_gap_by_hand():
  audio = np.array([[0.0, 0.0], [2.0, 0.0]])
  text = np.array([[1.0, 3.0], [1.0, 1.0], [1.0, 2.0]])
  assert modality_gap(audio, text) == pytest.approx(2.0)
  with pytest.raises(ValueError):
    modality_gap(audio, text[:, :1])


def test_input_errors():
  s = np.zeros((4, 2))
  with pytest.raises(ValueError, match="caption_to_clip"):
    t2a_ranks(s, np.array([0, 1, 2, 0]))
  with pytest.raises(ValueError, match="caption_to_clip"):
    t2a_ranks(s, np.array([0, 1, 0]))
  with pytest.raises(ValueError, match="NaN"):
    t2a_ranks(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))
  with pytest.raises(ValueError, match="no"):
    a2t_ranks(np.zeros((3, 4)), np.array([0, 1, 0, 1]))
  with pytest.raises(ValueError, match="num_relevant"):
    retrieval_metrics(np.ones((2, 3), int))


# ---------------------------------------------------------------- Sinkhorn plan vs POT


def _pot_plan(cost, eps, iters, normalize=True):
  c = cost / cost.max() if normalize else cost
  n, m = c.shape
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return ot.sinkhorn(np.full(n, 1.0 / n), np.full(m, 1.0 / m), c, eps, numItermax=iters)


@pytest.mark.parametrize("shape", [(9, 23), (23, 9)])
@pytest.mark.parametrize("eps", [0.1, 0.03])
@pytest.mark.parametrize("iters", [1, 10])
def test_sinkhorn_matches_pot_float64(shape, eps, iters):
  rng = np.random.default_rng(3)
  cost = 2.0 * rng.random(shape)
  want = _pot_plan(cost, eps, iters)
  assert want.min() > 0  # POT did not underflow
  with jax.enable_x64(True):
    got = np.asarray(sinkhorn_plan(cost, eps, iters))
    log_got = np.asarray(sinkhorn_log_plan(cost, eps, iters))
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
  np.testing.assert_allclose(log_got, np.log(want), rtol=0, atol=1e-10)
  np.testing.assert_array_equal(
    np.argsort(-log_got, axis=1, kind="stable"), np.argsort(-want, axis=1, kind="stable")
  )
  # After the final u-update the row marginals are exactly uniform.
  np.testing.assert_allclose(got.sum(1), 1.0 / shape[0], rtol=1e-12)


def test_sinkhorn_float32_matches_pot_and_rankings():
  rng = np.random.default_rng(4)
  cost = rng.random((30, 40)).astype(np.float32)
  for eps in (0.1, 0.03):
    want = _pot_plan(cost.astype(np.float64), eps, 10)
    got = np.asarray(sinkhorn_plan(cost, eps, 10))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=0)
    np.testing.assert_array_equal(
      np.argsort(-np.asarray(score_matrix(cost, "plan", eps, 10)), axis=1),
      np.argsort(-want, axis=1),
    )


def test_sinkhorn_without_normalisation_matches_pot():
  rng = np.random.default_rng(5)
  cost = 0.5 * rng.random((8, 12))
  with jax.enable_x64(True):
    got = np.asarray(sinkhorn_plan(cost, 0.1, 10, normalize_max=False))
  np.testing.assert_allclose(got, _pot_plan(cost, 0.1, 10, normalize=False), rtol=1e-10)


def test_small_eps_log_plan_is_finite():
  # eps 0.001: exp(-C/eps) underflows in float32 and float64; the log plan does not.
  rng = np.random.default_rng(6)
  log_p = np.asarray(sinkhorn_log_plan(rng.random((20, 30)).astype(np.float32), 0.001, 10))
  assert np.isfinite(log_p).all()


def test_score_matrix_distance_and_errors():
  cost = np.array([[0.3, 0.1], [0.2, 0.9]], np.float32)
  np.testing.assert_array_equal(np.asarray(score_matrix(cost, "distance")), -cost)
  with pytest.raises(ValueError, match="rank_by"):
    score_matrix(cost, "cosine")


def test_plan_scores_feed_metrics():
  # A planted near-diagonal cost: both rankings retrieve every caption's clip at rank 1.
  rng = np.random.default_rng(7)
  c2c = np.repeat(np.arange(10), 5)
  cost = 1.0 + 0.1 * rng.random((50, 10)) - 0.5 * (c2c[:, None] == np.arange(10)[None, :])
  for rank_by in ("distance", "plan"):
    m = t2a_metrics(score_matrix(cost.astype(np.float32), rank_by), c2c)
    assert m["R@1"] == 100.0 and m["mAP@10"] == pytest.approx(100.0)


# ---------------------------------------------------------------- report


def test_format_metrics_table():
  t2a = dict(zip(METRIC_KEYS, [12.345, 40.0, 55.5, 90.0, 9.0, 23.456, 25.0]))
  a2t = dict(zip(METRIC_KEYS, [15.0, 42.0, 60.0, 91.0, 7.0, 20.0, 18.25]))
  text = format_metrics_table(
    {"t2a": t2a, "a2t": a2t, "modality_gap": 0.12345, "rank_by": "plan (eps=0.03, 10 iterations)"}
  )
  lines = text.splitlines()
  assert lines[0].split() == list(METRIC_KEYS)
  assert lines[1].split() == ["t2a", "12.35", "40.00", "55.50", "90.00", "9", "23.5", "25.00"]
  assert lines[2].split()[0] == "a2t" and lines[2].split()[-1] == "18.25"
  assert len({len(l) for l in lines[:3]}) == 1  # aligned columns
  assert "rank_by: plan (eps=0.03, 10 iterations)" in text and "modality gap: 0.1235" in text
  with pytest.raises(ValueError, match="lacks"):
    format_metrics_table({"t2a": {"R@1": 1.0}})
