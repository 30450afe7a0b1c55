"""Knowledge-distillation-guided structured pruning of w2v-BERT 2.0.

- ``HardConcreteGates``: L0 gates (``gates.py``).
- ``GatedWav2Vec2Bert``: gates on the heads, FFN units and conv channels of a
  ``transformers.Wav2Vec2BertModel``, with the expected parameter count and
  sparsity (``gated.py``).
- ``LagrangianSparsityController``: the sparsity term with learnable
  multipliers (``gates.py``).
- ``materialize``: slicing into a ``PrunedWav2Vec2BertModel``
  (``materialize.py``; the model is ``lobes/pruned_w2vbert.py``); importing this package registers
  ``PrunedWav2Vec2BertConfig``/``PrunedWav2Vec2BertModel`` with
  ``transformers.AutoConfig``/``AutoModel``.
- Parameter and MAC counts (``counting.py``).
"""

from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import (
    GROUPS,
    EmptyConvolutionModule,
    HeadlessSelfAttention,
    PrunedWav2Vec2BertConfig,
    PrunedWav2Vec2BertModel,
    register_auto_classes,
)

from .counting import (
    FRAMES_PER_SECOND,
    count_encoder_macs,
    count_encoder_params,
    encoder_layer_sizes,
    full_layer_keep,
)
from .gated import GatedWav2Vec2Bert
from .gates import HardConcreteGates, LagrangianSparsityController
from .materialize import glu_rows, materialize

# Users load saved pruned encoders with transformers' Auto classes after importing us.
register_auto_classes()

__all__ = [
    "FRAMES_PER_SECOND",
    "GROUPS",
    "EmptyConvolutionModule",
    "GatedWav2Vec2Bert",
    "HardConcreteGates",
    "HeadlessSelfAttention",
    "LagrangianSparsityController",
    "PrunedWav2Vec2BertConfig",
    "PrunedWav2Vec2BertModel",
    "count_encoder_macs",
    "count_encoder_params",
    "encoder_layer_sizes",
    "full_layer_keep",
    "glu_rows",
    "materialize",
    "register_auto_classes",
]
