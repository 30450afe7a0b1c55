"""Parameter counts of the full-size w2v-BERT 2.0 speaker model, without downloading.

Run ``python -m speechbrain_w2vbert_sv.sizes``. Each training stage's modules are built
as its recipe builds them, on the meta device from the default `Wav2Vec2BertConfig`
(which is w2v-BERT 2.0's), so no memory is allocated and nothing is fetched; a stage
trains the parameters that require gradients: stage 1 the LoRA adapters, the MFA
head and the AAM classifier (one 256-dim row per class: VoxCeleb2's 5,994 speakers x
3 speed factors by default), stages 2 and 3 everything.
"""

import argparse

import torch
from speechbrain.lobes.models.ECAPA_TDNN import Classifier

from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.utils import count_parameters

# The recipes' classes on VoxCeleb2: 5,994 speakers x speed factors 0.9, 1.0, 1.1.
VOXCELEB2_CLASSES = 5994 * 3


def full_size_counts(
    lora_rank=64, lora_alpha=128, num_classes=VOXCELEB2_CLASSES, config=None, head=None
):
    """Parameter counts of the default full-size configuration and of what each stage trains.

    Arguments
    ---------
    lora_rank : int
        LoRA rank of stage 1.
    lora_alpha : float
        LoRA alpha of stage 1.
    num_classes : int
        Classes of the AAM classifier (speakers x speed-perturbation factors).
    config : dict, optional
        ``Wav2Vec2BertConfig`` keyword arguments (default: w2v-BERT 2.0's).
    head : dict, optional
        ``MFAHead`` keyword arguments besides ``num_hidden_states`` (default: its
        defaults, those of the recipes).

    Returns
    -------
    dict
        ``encoder``, ``head``, ``classifier``, ``lora_trainable``,
        ``stage1_trainable`` and ``stage2_trainable`` (stage 3 trains what stage 2
        does) counts.
    """
    counts = {}
    for stage, settings in (
        ("stage1", {"freeze": True, "lora_rank": lora_rank, "lora_alpha": lora_alpha}),
        ("stage2", {"freeze": False, "lora_rank": 0}),
    ):
        with torch.device("meta"):
            # Wav2Vec2BertConfig's defaults are w2v-BERT 2.0's.
            backbone = W2VBertBackbone(config=config or {"hidden_size": 1024}, **settings)
            mfa = MFAHead(num_hidden_states=backbone.num_hidden_states, **(head or {}))
            classifier = Classifier(
                input_size=mfa.embedding.out_features, lin_blocks=0, out_neurons=num_classes
            )
        trained = torch.nn.ModuleList([backbone, mfa, classifier])
        counts[f"{stage}_trainable"] = count_parameters(trained, trainable_only=True)
        if stage == "stage1":
            lora = count_parameters(backbone, trainable_only=True)
            counts.update(
                encoder=count_parameters(backbone) - lora,
                head=count_parameters(mfa),
                classifier=count_parameters(classifier),
                lora_trainable=lora,
            )
    return {
        k: counts[k]
        for k in (
            "encoder",
            "head",
            "classifier",
            "lora_trainable",
            "stage1_trainable",
            "stage2_trainable",
        )
    }


def main(argv=None):
    """Print the counts in millions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora_rank", type=int, default=64)
    parser.add_argument("--lora_alpha", type=float, default=128)
    parser.add_argument(
        "--num_classes",
        type=int,
        default=VOXCELEB2_CLASSES,
        help="AAM classifier classes (default: VoxCeleb2's 5,994 speakers x 3 speeds)",
    )
    args = parser.parse_args(argv)
    counts = full_size_counts(args.lora_rank, args.lora_alpha, args.num_classes)
    for name, value in counts.items():
        print(f"{name:>17}: {value / 1e6:8.2f} M ({value:,})")


if __name__ == "__main__":
    main()
