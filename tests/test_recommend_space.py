"""The recommendation's search space: axes, candidate names (unique row keys), overrides."""
import pytest

from benchmark.config import CompressionConfig
from benchmark.errors import ConfigError
from benchmark.recommend.request import RecommendRequest
from benchmark.recommend.space import AXES, Candidate, Space, SpaceContext, compression_name, parse_axis_overrides


def space(**overrides) -> Space:
    return Space(SpaceContext(device="cpu", backends=("onnxruntime", "pytorch"), cores=2,
                              int8_formats=("u8s8", "s8s8"), overrides=parse_axis_overrides(
                                  [f"{k}={v}" for k, v in overrides.items()])))


def test_names_carry_every_setting_that_varies():
    base = Candidate(CompressionConfig(), "onnxruntime")
    assert base.name == "fp32" and base.is_reference
    q = Candidate(CompressionConfig(precision="int8-static", calib_method="entropy", int8_format="s8s8"), "onnxruntime")
    assert q.name == "int8-static[entropy,s8s8]"
    mixed = Candidate(CompressionConfig(precision="mixed", exclude_layers=("a", "b"), int8_format="auto"), "onnxruntime")
    assert mixed.name == "mixed[int8,minmax,auto,keep2]"
    default = Candidate(CompressionConfig(precision="mixed", exclude_layers=("a",)), "onnxruntime")
    assert default.name == "mixed[int8,minmax,measure,keep1]"  # the format is measured unless a candidate names one
    fast = q.with_runtime("threads", 1).with_runtime("graph_optimization_level", "basic")
    assert fast.name == "int8-static[entropy,s8s8]@opt-basic@t1"
    assert fast.build_name == q.build_name and not fast.is_reference
    assert fast.with_runtime("threads", 0).name == "int8-static[entropy,s8s8]@opt-basic"  # the default adds no tag
    pruned = CompressionConfig(prune_ratio=0.5, distill=True, distill_epochs=2)
    assert compression_name(pruned) == "fp32+prune-s0.5+distill2"
    assert Candidate(pruned).family == "prune 0.5 + distill"


def test_single_axis_candidates_have_unique_row_keys_and_cover_each_axis():
    cands = space().single_axis_candidates()
    keys = [f"{c.name}|{c.backend}" for c in cands]
    assert len(keys) == len(set(keys))
    names = {c.name for c in cands if c.backend == "onnxruntime"}
    assert {"fp32", "fp16", "bf16", "int8-dynamic", "int8-static[minmax,u8s8]", "int8-static[minmax,s8s8]",
            "int8-static[percentile,u8s8]", "int8-static[entropy,u8s8]", "fp32+prune-s0.25", "fp32+prune-s0.5",
            "fp32+prune-s0.75", "fp32+lowrank0.5", "fp32@t1", "fp32@opt-basic", "fp32@opt-extended"} <= names
    # ONNX Runtime's graph optimization level is not a PyTorch setting
    assert not any("@opt" in c.name for c in cands if c.backend == "pytorch")
    assert any(c.name == "fp32@t1" for c in cands if c.backend == "pytorch")
    # one axis at a time: no combinations in this stage
    assert not any(c.compression.prune_ratio and c.compression.precision != "fp32" for c in cands)


def test_overrides_restrict_axes():
    cands = space(prune="0", lowrank="0", precision="fp32,int8-static", calib_method="minmax",
                  int8_format="u8s8", threads="0", graph_optimization_level="all").single_axis_candidates()
    assert sorted({c.name for c in cands}) == ["fp32", "int8-static[minmax,u8s8]"]
    sp = space(keep_float="0", distill="off")
    assert sp.values["keep_float"] == (0,) and sp.values["distill"] == (False,)


def test_distill_is_not_offered_without_training_data():
    sp = Space(SpaceContext(has_train_data=False))
    assert sp.values["distill"] == (False,)


def test_one_core_offers_no_thread_axis():
    assert Space(SpaceContext(cores=1)).values["threads"] == (0,)


@pytest.mark.parametrize("text, match", [
    ("prune", "NAME=V1,V2"), ("colour=red", "unknown search axis 'colour'"), ("prune=1.5", r"\[0, 1\)"),
    ("precision=int4", "expected one of"), ("distill=maybe", "on or off"),
])
def test_bad_overrides_are_one_line_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_axis_overrides([text])


def test_request_validates_budgets_and_axes():
    assert RecommendRequest(model="sample:digits-cnn", budget_points=0.5).repeats >= 3
    with pytest.raises(ConfigError, match="quality budget"):
        RecommendRequest(model="sample:digits-cnn", budget_points=-1)
    with pytest.raises(ConfigError, match="latency budget"):
        RecommendRequest(model="sample:digits-cnn", latency_budget_ms=0)
    with pytest.raises(ConfigError, match="repeats"):
        RecommendRequest(model="sample:digits-cnn", repeats=2)
    with pytest.raises(ConfigError, match="unknown search axis"):
        RecommendRequest(model="sample:digits-cnn", axes=("nope=1",))
    req = RecommendRequest(model="m.onnx", axes=("prune=0,0.5",), backends=("onnxruntime",))
    assert RecommendRequest.from_dict(req.to_dict()) == req


def test_every_registered_axis_parses_its_own_offered_values():
    ctx = SpaceContext(cores=4)
    for name in AXES:
        axis = AXES.get(name)
        for value in axis.offered(ctx):
            text = {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)
            assert axis.parse(text) == value
