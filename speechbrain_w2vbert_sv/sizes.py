"""Parameter counts of the full-size w2v-BERT 2.0 speaker model, without downloading.

Run ``python -m speechbrain_w2vbert_sv.sizes``. The model is built on the meta device
from the default `Wav2Vec2BertConfig` (which is w2v-BERT 2.0's), so no memory is
allocated and nothing is fetched.
"""

import argparse

import torch

from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.utils import count_parameters


def full_size_counts(lora_rank=64, lora_alpha=128):
    """Parameter counts of the default full-size configuration.

    Arguments
    ---------
    lora_rank : int
        LoRA rank of stage 1.
    lora_alpha : float
        LoRA alpha of stage 1.

    Returns
    -------
    dict
        ``encoder``, ``head``, ``lora_trainable`` and ``stage1_trainable`` counts.
    """
    with torch.device("meta"):
        # Wav2Vec2BertConfig's defaults are w2v-BERT 2.0's.
        backbone = W2VBertBackbone(
            config={"hidden_size": 1024}, freeze=True, lora_rank=lora_rank,
            lora_alpha=lora_alpha,
        )
        head = MFAHead(num_hidden_states=backbone.num_hidden_states)
    lora = count_parameters(backbone, trainable_only=True)
    encoder = count_parameters(backbone) - lora
    head_count = count_parameters(head)
    return {
        "encoder": encoder,
        "head": head_count,
        "lora_trainable": lora,
        "stage1_trainable": lora + head_count,
    }


def main(argv=None):
    """Print the counts in millions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora_rank", type=int, default=64)
    parser.add_argument("--lora_alpha", type=float, default=128)
    args = parser.parse_args(argv)
    counts = full_size_counts(args.lora_rank, args.lora_alpha)
    for name, value in counts.items():
        print(f"{name:>17}: {value / 1e6:8.2f} M ({value:,})")


if __name__ == "__main__":
    main()
