"""Int8 dynamic quantization of speaker embedding models for CPU inference.

Weights of the linear layers are stored in int8 (one scale per output channel) and
activations are quantized on the fly, call by call: no calibration data is needed and
the model keeps its float interface. The front end, the normalisations, the depthwise
convolutions and the attention products stay in float32.

In torch, :func:`quantize_dynamic_int8` quantizes a loaded model and
:func:`export_int8` writes a model folder whose ``hyperparams.yaml`` rebuilds the
quantized model and whose ``embedding_model.ckpt`` holds the int8 weights (a quarter of
the fp32 size); it loads like any exported folder (``load_model``, ``from_hparams``).
For ONNX Runtime see ``speechbrain_w2vbert_sv.inference.onnx.export_onnx(..., int8=True)``.

The pointwise convolutions of the w2v-BERT convolution modules (kernel size 1) are
linear layers too, and by default they run as quantized linear layers: at full size
that made a convolution module 2.3x faster (``pointwise_conv_int8_speedup`` of
``benchmarks/deploy.py``, measured on a loaded machine).
"""

import copy
import pathlib
import warnings

import ruamel.yaml
import torch
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from speechbrain_w2vbert_sv.inference.model_yaml import HPARAMS_FILE, WEIGHTS_FILE, yaml_error

QUANTIZE_FUNCTION = "speechbrain_w2vbert_sv.inference.quantization.quantize_dynamic_int8"


class PointwiseLinear(torch.nn.Module):
    """A kernel-size-1 ``Conv1d`` computed as a linear layer over channels.

    Arguments
    ---------
    conv : torch.nn.Conv1d
        Convolution with ``kernel_size=1``, no padding, stride, dilation or groups.

    Example
    -------
    >>> conv = torch.nn.Conv1d(8, 6, 1)
    >>> x = torch.randn(2, 8, 5)
    >>> torch.allclose(PointwiseLinear(conv)(x), conv(x), atol=1e-6)
    True
    """

    def __init__(self, conv):
        super().__init__()
        self.linear = torch.nn.Linear(conv.in_channels, conv.out_channels, conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight[..., 0])
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x):
        """``[batch, channels, time]`` in and out, as the convolution."""
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def _is_pointwise(module):
    return (
        isinstance(module, torch.nn.Conv1d)
        and module.kernel_size == (1,)
        and module.stride == (1,)
        and module.dilation == (1,)
        and module.groups == 1
        and module.padding in ((0,), "valid")
    )


def quantize_dynamic_int8(module, pointwise_conv=True):
    """An int8 copy of a model: dynamic quantization of its linear layers.

    Arguments
    ---------
    module : torch.nn.Module
        A float model (e.g. ``SpeakerEmbeddingModel``, pruned or not), on the CPU.
    pointwise_conv : bool
        Also quantize kernel-size-1 ``Conv1d`` layers (as linear layers); False
        keeps them in float.

    Returns
    -------
    torch.nn.Module
        The quantized copy, in eval mode (the input is left unchanged).

    Example
    -------
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU())
    >>> quantized = quantize_dynamic_int8(model)
    >>> type(quantized[0]).__name__
    'Linear'
    >>> x = torch.randn(4, 16)
    >>> bool(torch.nn.functional.cosine_similarity(quantized(x), model(x)).min() > 0.99)
    True
    """
    if any(p.device.type != "cpu" for p in module.parameters()):
        raise ValueError("int8 dynamic quantization runs on the CPU: move the model with .cpu()")
    module = copy.deepcopy(module).eval()
    if pointwise_conv:
        for parent in list(module.modules()):
            for name, child in parent.named_children():
                if _is_pointwise(child):
                    setattr(parent, name, PointwiseLinear(child))
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it will move to torchao.
        warnings.filterwarnings("ignore", message=".*torchao.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # Layers pruned to zero width stay as they are (nothing to quantize).
        layers = {
            name: torch.ao.quantization.per_channel_dynamic_qconfig
            for name, child in module.named_modules()
            if isinstance(child, torch.nn.Linear) and child.weight.numel() > 0
        }
        return torch.ao.quantization.quantize_dynamic(module, layers, dtype=torch.qint8)


def export_int8(model_folder, output, pointwise_conv=True):
    """Writes an int8 copy of an exported model folder.

    Arguments
    ---------
    model_folder : str or os.PathLike
        A folder written by ``w2vbert-sv export`` (``hyperparams.yaml`` and
        ``embedding_model.ckpt``), pruned or not.
    output : str or os.PathLike
        Folder to write (created); it loads like the input folder.
    pointwise_conv : bool
        Also quantize the pointwise convolutions.

    Returns
    -------
    pathlib.Path
        The output folder.
    """
    from speechbrain_w2vbert_sv.inference.interface import load_model

    model_folder, output = pathlib.Path(model_folder), pathlib.Path(output)
    if not (model_folder / HPARAMS_FILE).is_file():
        raise ValueError(
            f"{model_folder}: not an exported model folder (expected {HPARAMS_FILE} + "
            f"{WEIGHTS_FILE}; `w2vbert-sv export` writes one)"
        )
    yaml = ruamel.yaml.YAML()
    try:
        tree = yaml.load((model_folder / HPARAMS_FILE).read_text(encoding="utf-8"))
    except YAMLError as error:
        raise yaml_error(model_folder / HPARAMS_FILE, error) from None
    try:
        float_model = tree["model"]["embedding_model"]
        linked = [tree, tree["modules"], tree["pretrainer"]["loadables"]]
    except (KeyError, TypeError):
        raise ValueError(
            f"{model_folder / HPARAMS_FILE}: not a model folder of this package "
            "(no model.embedding_model, modules and pretrainer sections)"
        ) from None
    if any(entry["embedding_model"] is not float_model for entry in linked):
        raise ValueError(f"{model_folder}: already quantized, or not an exported folder")
    model = load_model(model_folder).mods.embedding_model
    quantized = quantize_dynamic_int8(model, pointwise_conv=pointwise_conv)

    # The float model stays defined in `model`; `embedding_model` (and the modules and
    # pretrainer that load its weights) becomes its quantized version.
    node = CommentedMap(module=float_model, pointwise_conv=bool(pointwise_conv))
    node.yaml_set_ctag(ruamel.yaml.tag.Tag(suffix="!apply:" + QUANTIZE_FUNCTION))
    for entry in linked:
        entry["embedding_model"] = node
    output.mkdir(parents=True, exist_ok=True)
    with open(output / HPARAMS_FILE, "w", encoding="utf-8") as out:
        out.write(
            "# int8 dynamic quantization of the linear layers (speechbrain_w2vbert_sv."
            "quantization.export_int8).\n"
        )
        yaml.dump(tree, out)
    torch.save(quantized.state_dict(), output / WEIGHTS_FILE)
    return output
