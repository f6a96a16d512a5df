"""The recommendation's decision on synthetic interleaved timings: the fastest finalist within both
budgets that is significantly faster than FP32, else "keep FP32" with the reason."""
from types import SimpleNamespace

import numpy as np
import pytest

from benchmark.config import CompressionConfig
from benchmark.measure.latency import summarize
from benchmark.recommend.decide import decide
from benchmark.recommend.measurer import Outcome, Timing
from benchmark.recommend.search import Search
from benchmark.recommend.space import Candidate, Space, SpaceContext

RNG = np.random.default_rng(0)


def runs(medians, spread=0.01):
    """One LatencyStats per repeat, each 200 iterations around its median."""
    return [summarize(m * (1 + spread * RNG.standard_normal(200))) for m in medians]


def timed(cand: Candidate, cand_ms, ref_ms, *, drop=0.0, holdout=0.0, stage="single") -> Outcome:
    t = Timing(rung=2, duration_s=0.1, cand=runs(cand_ms), ref=runs(ref_ms))
    return Outcome(cand, stage=stage, status="ok", quality={"metric": "accuracy"}, drop=drop,
                   holdout=None if holdout is None else {"drop_points": holdout}, timing=t)


def make_search(outs, finalists, budget=1.0) -> Search:
    m = SimpleNamespace(device="cpu", refs={"onnxruntime": {}}, model=SimpleNamespace(name="m"))
    s = Search(m, Space(SpaceContext()), budget_points=budget, time_budget_s=10, repeats=5, metric=None, started=0.0,
               progress=lambda *a: None, emit_row=lambda o: None)
    s.base = "onnxruntime"
    ref = Outcome(Candidate(backend="onnxruntime"), stage="reference", status="ok", drop=0.0,
                  timing=Timing(2, 0.1, cand=runs([2.0] * 5)))
    for o in [ref, *outs]:
        s.outcomes[o.key] = o
    s.finalists = list(finalists)
    return s


FP32 = [2.0, 2.2, 1.9, 2.1, 2.0]  # the reference's medians in each repeat: the machine drifts
INT8 = Candidate(CompressionConfig(precision="int8-static", int8_format="u8s8"))
FP16 = Candidate(CompressionConfig(precision="fp16"))
PRUNE = Candidate(CompressionConfig(prune_ratio=0.5))


def test_the_fastest_candidate_over_the_quality_budget_is_not_chosen():
    prune = timed(PRUNE, [m / 4 for m in FP32], FP32, drop=60.0)  # 4x, but 60 points worse
    int8 = timed(INT8, [m / 2 for m in FP32], FP32, drop=0.3, holdout=0.6)
    fp16 = timed(FP16, [m / 1.2 for m in FP32], FP32, drop=0.0, holdout=0.0)
    s = make_search([prune, int8, fp16], finalists=[int8, fp16])
    d = decide(s)
    assert d.chosen is int8 and not d.keep_fp32
    assert prune.p50_ms < int8.p50_ms  # it really was the fastest
    assert "-60.00 points" in d.reasons[prune.key]
    assert "slower than int8-static" in d.reasons[fp16.key]
    fam = {f["family"]: f for f in d.families}
    assert fam["int8-static"]["won"] and "-60.00 points" in fam["prune 0.5"]["reason"]
    assert [o.name for o in d.runners_up] == [fp16.name]


def test_a_finalist_over_the_budget_on_the_held_out_split_is_not_chosen():
    fast = timed(INT8, [m / 3 for m in FP32], FP32, drop=0.9, holdout=1.4)
    slower = timed(FP16, [m / 1.5 for m in FP32], FP32, drop=0.0, holdout=0.2)
    d = decide(make_search([fast, slower], [fast, slower]))
    assert d.chosen is slower
    assert "held-out" in d.reasons[fast.key] and "-1.40 points" in d.reasons[fast.key]
    assert d.chosen.holdout["drop_points"] <= 1.0


def test_no_significant_difference_keeps_fp32_with_the_reason():
    same = timed(INT8, [m * f for m, f in zip(FP32, (1.02, 0.97, 1.01, 0.99, 1.0))], FP32)
    d = decide(make_search([same], [same]))
    assert d.keep_fp32 and d.chosen.candidate.is_reference
    assert d.reason.startswith("keep FP32: no candidate within 1 points was significantly faster than FP32")
    assert "no significant difference" in d.reason


def test_a_significant_but_tiny_gain_is_below_the_minimum_speedup():
    tiny = timed(INT8, [m / 1.01 for m in FP32], FP32)
    s = make_search([tiny], [tiny])
    d = decide(s, min_speedup=1.03)
    assert d.keep_fp32 and "below the minimum speedup" in d.reasons[tiny.key]
    assert decide(s, min_speedup=1.0).chosen is tiny


def test_the_latency_budget_is_a_second_budget():
    a = timed(INT8, [m / 2 for m in FP32], FP32)  # p50 about 1.0 ms
    b = timed(FP16, [m / 1.5 for m in FP32], FP32)  # about 1.35 ms
    s = make_search([a, b], [a, b])
    assert decide(s, latency_budget_ms=1.2).chosen is a
    d = decide(s, latency_budget_ms=0.5)
    assert d.keep_fp32 and "over the latency budget 0.5 ms" in d.reason


def test_fewer_than_three_repeats_never_win():
    two = timed(INT8, [m / 2 for m in FP32[:2]], FP32[:2])
    d = decide(make_search([two], [two]))
    assert d.keep_fp32 and "too few" in d.reasons[two.key]


@pytest.mark.parametrize("status, text", [("failed", "failed: boom"), ("skipped", "skipped: boom")])
def test_failed_and_skipped_candidates_say_why(status, text):
    bad = Outcome(FP16, status=status, error="boom")
    d = decide(make_search([bad], []))
    assert d.reasons[bad.key] == text
    assert {f["family"]: f["reason"] for f in d.families}["fp16"] == text


def test_the_held_out_check_goes_down_the_ranking_until_three_hold_the_budget():
    """Runtime siblings of a build that fails on the held-out split all fail there; the final round is
    filled from further down the ranking instead."""
    bad = [timed(INT8.with_runtime("threads", t), [m / 3 for m in FP32], FP32) for t in (0, 1, 2)]
    good = [timed(FP16.with_runtime("threads", t), [m / 1.5 for m in FP32], FP32) for t in (0, 1, 2)]
    s = make_search(bad + good, [])
    held = {o.key: (1.6 if o in bad else 0.4) for o in bad + good}

    def score(o, session=None, split="search"):
        assert split == "holdout"
        o.holdout = {"drop_points": held[o.key]}

    s.m.score = score
    finalists = s.finalists = s.verified(s.halving())
    assert {o.key for o in finalists} == {o.key for o in good}
    assert all("-1.60 points on the held-out split" in o.eliminated for o in bad)
    assert decide(s).chosen in good
