"""Backbones: each maps (features, lengths) to (stacked hidden states [L, B, T, D], lengths)."""
