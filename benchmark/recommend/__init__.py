"""``slimbench recommend``: the fastest variant of a model within a quality budget (and optionally a
latency budget), searched over precision, pruning, low-rank, distillation, backend and runtime
settings, with confidence intervals from interleaved timing.

Modules: :mod:`.request` (what is asked), :mod:`.space` (the axes and candidates),
:mod:`.splits` (search / held-out / calibration / training data), :mod:`.measurer` (build, score,
time), :mod:`.stats` (intervals), :mod:`.search` (the strategy) and :mod:`.refine` (its greedy
steps), :mod:`.decide` (the choice and the reasons), :mod:`.rows` (result rows), :mod:`.artifact`
(the chosen model file), :mod:`.report` (the recommendation object), :mod:`.job` (child process,
parent, background runner).
"""
from __future__ import annotations

from .job import (
    DEFAULT_STEP_TIMEOUT_S, is_recommendation, load_recommendation, recommended_pick, record_folder,
    run_recommendation, run_stored_recommendation, start_recommend_background, validate_request,
)
from .request import DEFAULT_TIME_BUDGET_S, RecommendRequest
from .space import AXES, Axis, Candidate, register_axis

__all__ = ["RecommendRequest", "DEFAULT_TIME_BUDGET_S", "DEFAULT_STEP_TIMEOUT_S", "run_recommendation",
           "run_stored_recommendation", "start_recommend_background", "load_recommendation", "record_folder",
           "is_recommendation", "validate_request", "recommended_pick", "AXES", "Axis", "Candidate", "register_axis"]
