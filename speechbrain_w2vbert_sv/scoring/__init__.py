"""Verification scoring at VoxCeleb scale: trial lists, cosine scoring, adaptive s-norm,
quality-aware calibration (QMF), metrics, result tables and plots.

The public functions are re-exported here (``from speechbrain_w2vbert_sv.scoring import
read_trials, cosine_scores``).
"""

from speechbrain_w2vbert_sv.scoring.calibration import (
    QMFCalibrator,
    qmf_features,
    quality_measures,
)
from speechbrain_w2vbert_sv.scoring.cosine import (
    cosine_scores,
    embedding_matrix,
    mean_embedding,
    trial_matrix,
)
from speechbrain_w2vbert_sv.scoring.results import (
    RESULT_PRIORS,
    evaluate,
    format_results_table,
    write_results_table,
)
from speechbrain_w2vbert_sv.scoring.score_normalization import (
    adaptive_snorm,
    cohort_statistics,
    snorm,
)
from speechbrain_w2vbert_sv.scoring.trials import (
    Trials,
    read_enrollment_map,
    read_scores,
    read_trials,
    write_scores,
)

__all__ = [
    "QMFCalibrator",
    "RESULT_PRIORS",
    "Trials",
    "adaptive_snorm",
    "cohort_statistics",
    "cosine_scores",
    "embedding_matrix",
    "evaluate",
    "format_results_table",
    "mean_embedding",
    "qmf_features",
    "quality_measures",
    "read_enrollment_map",
    "read_scores",
    "read_trials",
    "snorm",
    "trial_matrix",
    "write_results_table",
    "write_scores",
]
