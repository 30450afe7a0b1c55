"""Training: the speaker Brain, learning-rate schedules, checkpoints, ASR distillation."""
