"""Tests for mltm_jax.evaluation.{retrieval, plan_ranking, report}.

References: hand-built rankings, a per-query argsort loop written like the official
evaluation (numpy brute force), float64 distances pair by pair, POT's ot.sinkhorn and a
numpy log-domain Sinkhorn.
"""

import warnings

import jax
import numpy as np
import ot
import pytest

from mltm_jax.evaluation import distance_filter
from mltm_jax.evaluation import distance_ranks as distance_ranks_module
from mltm_jax.evaluation.distance_ranks import (
  _refine_by_differences,
  _refine_by_rows,
  distance_metrics,
  distance_ranks,
)
from mltm_jax.evaluation.plan_ranking import (
  score_matrix,
  sinkhorn_log_plan,
  sinkhorn_log_plans_both,
  sinkhorn_plan,
)
from mltm_jax.evaluation.report import format_metrics_table
from mltm_jax.evaluation.retrieval import (
  METRIC_KEYS,
  a2t_metrics,
  a2t_ranks,
  modality_gap,
  retrieval_metrics,
  split_metrics,
  split_ranks,
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


# ---------------------------------------------------------------- exact ranks by distance


def _d2_brute(audio, text, m):
  """float64 (a_i - t_j)^T M (a_i - t_j), pair by pair (identical pairs give identical values)."""
  a, t, mm = (np.asarray(x, np.float64) for x in (audio, text, m))
  out = np.empty((a.shape[0], t.shape[0]))
  for i in range(a.shape[0]):
    for j in range(t.shape[0]):
      e = a[i] - t[j]
      out[i, j] = e @ mm @ e
  return out


def _brute_ranks(audio, text, m, c2c):
  d2 = _d2_brute(audio, text, m)
  return t2a_ranks(-d2.T, c2c), a2t_ranks(-d2, c2c)[0], d2


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _random_split(rng, n, d, noise):
  audio = _unit(rng.normal(size=(n, d)))
  c2c = np.repeat(np.arange(n), 5)
  text = _unit(audio[c2c] + noise * _unit(rng.normal(size=(5 * n, d))))
  a = rng.normal(size=(d, d))
  return audio, text, c2c, np.eye(d) + a @ a.T / (2 * d)


@pytest.mark.parametrize("bound", ["statistical", "worst_case"])
def test_distance_ranks_equal_float64_brute_force(bound):
  rng = np.random.default_rng(8)
  audio, text, c2c, m = _random_split(rng, 40, 24, noise=2.0)
  want_t2a, want_a2t, d2 = _brute_ranks(audio, text, m, c2c)
  for fraction in (0.25, 1.0):  # small sizes: the float64 matrix / always refine
    r = distance_ranks(audio, text, c2c, m, bound=bound, max_refine_fraction=fraction)
    assert r.fallback == (fraction < 1.0 and r.fallback)
    np.testing.assert_array_equal(r.t2a, want_t2a)
    np.testing.assert_array_equal(r.a2t, want_a2t)
  assert not r.fallback
  got = distance_metrics(audio, text, c2c, m, bound=bound)
  _assert_metrics_equal(got["t2a"], ref_t2a(-d2.T, c2c))
  _assert_metrics_equal(got["a2t"], ref_a2t(-d2, c2c))
  assert 10 < got["t2a"]["R@1"] < 100


def _at_distance(rng, center, q, m, rel):
  """center + e with e^T M e = q (1 + rel), e in a random direction (float64)."""
  e = rng.normal(size=center.shape)
  return center + e * np.sqrt(q * (1.0 + rel) / (e @ m @ e))


@pytest.mark.parametrize("max_elements", [distance_filter.MAX_MATRIX_ELEMENTS, 400])
@pytest.mark.parametrize("path", ["chosen", "differences", "rows"])
def test_distance_ranks_near_ties_are_refined_in_float64(max_elements, path, monkeypatch):
  """Distractors 1e-9 (relative) nearer or farther than the truth, and exact duplicates:
  float32 cannot order them, float64 can; the ranks must be the float64 ones (also when
  the 30 x 150 matrix is processed in tiles of 13 columns and of 2 rows), whichever way
  the comparisons are refined (one product row per comparison or per distinct vector)."""
  if path == "differences":
    monkeypatch.setattr(distance_ranks_module, "_refine_by_rows", _refine_by_differences)
  elif path == "rows":
    monkeypatch.setattr(distance_ranks_module, "_refine_by_differences", _refine_by_rows)
  rng = np.random.default_rng(9)
  n, d = 30, 32
  audio, text, c2c, m = _random_split(rng, n, d, noise=0.7)
  audio, text = audio.copy(), text.copy()
  for j in range(0, 5 * n, 7):  # T2A: clip k at (1 +- 1e-9) the distance of caption j's clip
    k = (c2c[j] + 1 + j % 5) % n
    q = (text[j] - audio[c2c[j]]) @ m @ (text[j] - audio[c2c[j]])
    audio[k] = _at_distance(rng, text[j], q, m, 1e-9 if j % 2 else -1e-9)
  audio[3] = audio[4]  # identical clips: an exact tie for their captions (pessimistic)
  for i in range(0, n, 3):  # A2T: another clip's caption at a near-equal distance to clip i
    r = 5 * i + 2
    x = 5 * ((i + 2) % n) + 4
    q = (text[r] - audio[i]) @ m @ (text[r] - audio[i])
    text[x] = _at_distance(rng, audio[i], q, m, -1e-9 if i % 2 else 1e-9)
  text[5 * 7 + 1] = text[5 * 8]  # a caption of clip 7 duplicated as one of clip 8
  r = distance_ranks(  # small: always refine
    audio, text, c2c, m, max_refine_fraction=1.0, max_matrix_elements=max_elements
  )
  want_t2a, want_a2t, _ = _brute_ranks(audio, text, m, c2c)
  assert r.refined > 0 and not r.fallback
  np.testing.assert_array_equal(r.t2a, want_t2a)
  np.testing.assert_array_equal(r.a2t, want_a2t)
  # float32 scores alone do not give these ranks.
  d2_32 = _d2_brute(audio.astype(np.float32), text.astype(np.float32), m.astype(np.float32))
  d2_32 = d2_32.astype(np.float32).astype(np.float64)
  assert not (
    np.array_equal(t2a_ranks(-d2_32.T, c2c), want_t2a)
    and np.array_equal(a2t_ranks(-d2_32, c2c)[0], want_a2t)
  )


@pytest.mark.slow  # compiles for several seconds on 2 cores
@pytest.mark.parametrize("bound", ["statistical", "worst_case"])
def test_distance_ranks_in_tiles_equal_float64_brute_force(bound, monkeypatch):
  """A matrix beyond max_matrix_elements, in tiles (uneven last tiles, down to one column
  or row per tile), and galleries beyond PACKED_COUNT_LIMIT (two separate counts): the
  float64 ranks, by refinement and by the tiled float64 fallback."""
  rng = np.random.default_rng(12)
  audio, text, c2c, m = _random_split(rng, 23, 16, noise=1.5)  # 23 clips x 115 captions
  want_t2a, want_a2t, _ = _brute_ranks(audio, text, m, c2c)
  monkeypatch.setattr(distance_filter, "PACKED_COUNT_LIMIT", 20)
  for elements in (23 * 115, 23 * 40, 1):  # whole; tiles of 40 columns / 8 rows; 1 x 1
    for fraction in (1.0, 0.0):  # refine / the float64 fallback
      r = distance_ranks(
        audio,
        text,
        c2c,
        m,
        bound=bound,
        max_refine_fraction=fraction,
        max_matrix_elements=elements,
      )
      assert r.fallback == (fraction == 0.0 or r.fallback)
      np.testing.assert_array_equal(r.t2a, want_t2a)
      np.testing.assert_array_equal(r.a2t, want_a2t)


def test_distance_ranks_collapsed_model_and_fallback():
  rng = np.random.default_rng(10)
  n, d = 12, 8
  c2c = np.repeat(np.arange(n), 5)
  same = _unit(rng.normal(size=(1, d)))
  audio, text = np.repeat(same, n, axis=0), np.repeat(same, 5 * n, axis=0)
  m = np.eye(d)
  r = distance_ranks(audio.astype(np.float32), text.astype(np.float32), c2c, m)
  np.testing.assert_array_equal(r.t2a, np.full(5 * n, n))  # every clip ties: worst rank
  np.testing.assert_array_equal(r.a2t, np.tile(np.arange(5 * n - 4, 5 * n + 1), (n, 1)))
  audio, text, c2c, m = _random_split(rng, 20, 16, noise=1.0)
  forced = distance_ranks(audio, text, c2c, m, max_refine_fraction=0.0)
  assert forced.fallback
  want_t2a, want_a2t, _ = _brute_ranks(audio, text, m, c2c)
  np.testing.assert_array_equal(forced.t2a, want_t2a)
  np.testing.assert_array_equal(forced.a2t, want_a2t)


def test_distance_ranks_variable_captions_and_errors():
  rng = np.random.default_rng(11)
  counts = rng.integers(1, 8, size=15)
  c2c = rng.permutation(np.repeat(np.arange(15), counts))
  audio = _unit(rng.normal(size=(15, 10)))
  text = _unit(audio[c2c] + _unit(rng.normal(size=(c2c.size, 10))))
  m = np.diag(rng.uniform(0.5, 2.0, 10))
  r = distance_ranks(audio, text, c2c, m)
  want_t2a, want_a2t, _ = _brute_ranks(audio, text, m, c2c)
  np.testing.assert_array_equal(r.counts, counts)
  np.testing.assert_array_equal(r.t2a, want_t2a)
  np.testing.assert_array_equal(r.a2t, want_a2t)
  with pytest.raises(ValueError, match="metric_matrix"):
    distance_ranks(audio, text, c2c, np.eye(9))
  with pytest.raises(ValueError, match="NaN"):
    distance_ranks(np.full_like(audio, np.nan), text, c2c, m)
  for bad in (np.nan, 1e39):  # a NaN, and a finite float64 beyond float32
    m_bad = m.copy()
    m_bad[2, 3] = bad
    with pytest.raises(ValueError, match="beyond float32"):
      distance_ranks(audio, text, c2c, m_bad)
  with pytest.raises(ValueError, match="bound"):
    distance_ranks(audio, text, c2c, m, bound="exact")


def test_split_ranks_match_numpy_ranks_with_ties():
  rng = np.random.default_rng(12)
  counts = rng.integers(1, 6, size=20)
  c2c = rng.permutation(np.repeat(np.arange(20), counts))
  s = rng.integers(0, 4, size=(20, c2c.size)).astype(np.float32)  # many ties
  st = rng.integers(0, 4, size=(20, c2c.size)).astype(np.float32)
  t2a, a2t, got_counts = split_ranks(s, st, c2c)
  np.testing.assert_array_equal(t2a, t2a_ranks(st.T, c2c))
  want, want_counts = a2t_ranks(s, c2c)
  np.testing.assert_array_equal(a2t, want)
  np.testing.assert_array_equal(got_counts, want_counts)
  m = split_metrics(s, st, c2c)
  _assert_metrics_equal(m["a2t"], a2t_metrics(s, c2c))
  _assert_metrics_equal(m["t2a"], t2a_metrics(st.T, c2c))


def _numpy_log_sinkhorn(cost, eps, iters):
  """Independent float64 log-domain Sinkhorn-Knopp (POT's updates, scipy logsumexp)."""
  from scipy.special import logsumexp

  c = cost / cost.max()
  nq, ng = c.shape
  log_k = -c / eps
  log_u, log_v = np.full(nq, -np.log(nq)), np.full(ng, -np.log(ng))
  for _ in range(iters):
    log_v = -np.log(ng) - logsumexp(log_k + log_u[:, None], axis=0)
    log_u = -np.log(nq) - logsumexp(log_k + log_v[None, :], axis=1)
  return log_u[:, None] + log_k + log_v[None, :]


@pytest.mark.parametrize("eps", [0.03, 0.001])  # kernel domain / log domain
def test_both_direction_plans_match_references(eps):
  rng = np.random.default_rng(13)
  cost = 2.0 * rng.random((17, 40))
  with jax.enable_x64(True):
    rows, cols_t = (np.asarray(x) for x in sinkhorn_log_plans_both(cost, eps, 10))
    single = np.asarray(sinkhorn_log_plan(cost, eps, 10))
  np.testing.assert_allclose(rows, _numpy_log_sinkhorn(cost, eps, 10), rtol=0, atol=1e-9)
  np.testing.assert_allclose(cols_t.T, _numpy_log_sinkhorn(cost.T, eps, 10), rtol=0, atol=1e-9)
  np.testing.assert_allclose(single, rows, rtol=0, atol=1e-12)
  if eps >= 0.01:  # POT (kernel domain) does not underflow here
    np.testing.assert_allclose(np.exp(rows), _pot_plan(cost, eps, 10), rtol=1e-10)
    np.testing.assert_allclose(np.exp(cols_t.T), _pot_plan(cost.T, eps, 10), rtol=1e-10)
