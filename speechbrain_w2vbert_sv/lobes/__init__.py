"""Model components: front ends, backbones, attention, heads, embedding models, losses.

Every backbone maps ``(features, lengths)`` to ``(stacked hidden states [L, B, T, D],
lengths)``; every head maps those to an embedding ``[B, 1, E]``; an embedding model
chains a front end, a backbone and a head (``(wavs, wav_lens) -> [B, 1, E]``).
"""
