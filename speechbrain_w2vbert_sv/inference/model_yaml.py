"""The inference ``hyperparams.yaml`` of a model, written from a training yaml.

A training yaml includes a model definition of ``hparams/`` (``w2vbert_mfa.yaml``,
``conformer_mfa.yaml``, ``speaker_adaptor.yaml``) with its settings; the inference
yaml is the template ``hparams/inference.yaml`` with that definition inlined (for
w2v-BERT, the encoder config written in, ``w2vbert_source: null``, LoRA off).
"""

import io
import pathlib

import ruamel.yaml
from hyperpyyaml import resolve_references
from ruamel.yaml.error import YAMLError
from speechbrain.utils.logger import get_logger
from transformers import AutoConfig, PretrainedConfig

from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import register_auto_classes
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import EncoderSourceError, build_w2vbert_config

logger = get_logger(__name__)

# hparams/ sits inside the package once installed and beside it in the repository.
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
_HPARAMS = _PACKAGE_DIR / "hparams"
if not _HPARAMS.is_dir():
    _HPARAMS = _PACKAGE_DIR.parent / "hparams"
TEMPLATE = _HPARAMS / "inference.yaml"
HPARAMS_FILE = "hyperparams.yaml"
WEIGHTS_FILE = "embedding_model.ckpt"

# Settings of the `model` section that only matter in training, or that the export
# replaces: the encoder is built from its config and LoRA is merged into the weights.
INFERENCE_SETTINGS = {
    "w2vbert_source": None,
    "w2vbert_cache_dir": None,
    "freeze_backbone": False,
    "lora_rank": 0,
    "gradient_checkpointing": False,
}
LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
W2VBERT_DEFINITION = "w2vbert_mfa.yaml"
# Parts of a trained embedding model that inference does not use.
TRAINING_ONLY_PREFIXES = ("ctc_lin.", "projections.")


def plain_values(node):
    """Plain Python values of a ruamel.yaml node; object nodes (``!new:``...) are left
    out of mappings."""
    if isinstance(node, dict):
        return {str(k): plain_values(v) for k, v in node.items() if not builds_object(v)}
    if isinstance(node, list):
        return [plain_values(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def builds_object(node):
    """Whether a yaml node builds an object (``!new:``, ``!name:``, ...)."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return isinstance(value, str) and value.startswith("!")


def read_resolved_yaml(hparams_file, overrides=None):
    """A hyperparameter file parsed with references resolved, nothing built (a file
    that does not parse is a one-line ValueError)."""
    try:
        with open(hparams_file, encoding="utf-8") as f:
            resolved = resolve_references(f, overrides or {})
        return ruamel.yaml.YAML().load(resolved)
    except YAMLError as error:
        raise yaml_error(hparams_file, error) from None


def yaml_error(file, error):
    """A one-line ValueError of a YAML parser error: the file, the problem, where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return ValueError(f"{file}: not valid YAML: {problem}{where}")


MODEL_TYPES = ("w2vbert_mfa", "conformer_mfa", "speaker_adaptor")


def model_definition_file(section):
    """The definition file of a resolved ``model`` section: its ``model_type`` key, or,
    for runs of versions that did not write it, the keys only that definition has."""
    if "model_type" in section:
        if section["model_type"] not in MODEL_TYPES:
            raise ValueError(
                f"model_type {section['model_type']!r} is not one of {', '.join(MODEL_TYPES)}"
            )
        return f"{section['model_type']}.yaml"
    if "w2vbert_source" in section:
        return "w2vbert_mfa.yaml"
    if "asr_model" in section and isinstance(section.get("conformer"), dict):
        return "speaker_adaptor.yaml"
    if "d_model" in section:
        return "conformer_mfa.yaml"
    return None


def model_settings(hparams_file, overrides=None):
    """The model definition and settings of a training yaml's ``model`` section.

    Nothing is instantiated: the file is only parsed (``!include`` and ``!ref``
    resolved), so datasets, augmentation and hub weights are not touched.

    Arguments
    ---------
    hparams_file : str or os.PathLike
        The training hyperparameters (SpeechBrain's resolved copy in the output
        folder, or the recipe's yaml with ``overrides`` for its placeholders).
    overrides : dict, optional
        Overrides of the file.

    Returns
    -------
    definition : str
        The file of ``hparams/`` that defines the model: ``w2vbert_mfa.yaml``,
        ``conformer_mfa.yaml`` or ``speaker_adaptor.yaml``.
    settings : dict
        Setting name -> plain value (``w2vbert_source``, ``lora_rank``, sizes...).
    """
    return model_section_settings(read_resolved_yaml(hparams_file, overrides), hparams_file)


def model_section_settings(tree, source):
    """``model_settings`` of a parsed training yaml (``source`` names it in errors)."""
    section = tree.get("model") if isinstance(tree, dict) else None
    definition = model_definition_file(section) if isinstance(section, dict) else None
    if definition is None:
        raise ValueError(
            f"{source}: no `model` section defined by one of hparams/"
            "w2vbert_mfa.yaml, conformer_mfa.yaml, speaker_adaptor.yaml (`model: "
            "!include:.../w2vbert_mfa.yaml`); the export reads the model from there"
        )
    return definition, plain_values(section)


def encoder_config(settings):
    """The encoder config of model settings, as keyword arguments.

    Arguments
    ---------
    settings : dict
        From ``model_settings``: ``w2vbert_source`` (read with ``AutoConfig``: only
        its ``config.json``, from the hub cache or a local folder) or
        ``w2vbert_config``.

    Returns
    -------
    dict
        Keyword arguments of the config (layerdrop and masking off).

    Example
    -------
    >>> config = encoder_config({"w2vbert_source": None, "w2vbert_config": {"hidden_size": 32}})
    >>> config["hidden_size"]
    32
    """
    source = settings.get("w2vbert_source")
    if source:
        register_auto_classes()  # the source may be a saved pruned encoder
        try:
            config = AutoConfig.from_pretrained(source, cache_dir=settings.get("w2vbert_cache_dir"))
        except OSError as error:
            raise EncoderSourceError(source, error) from None
        config = build_w2vbert_config(config)
    else:
        config = build_w2vbert_config(settings.get("w2vbert_config") or {})
    # The config class's own fields: the generic ones of PretrainedConfig (labels,
    # output flags, versions) say nothing about the encoder.
    generic = set(PretrainedConfig().to_dict()) - {"model_type"}
    return {k: v for k, v in config.to_dict().items() if k not in generic}


def inference_hparams_text(settings, threshold=None, header="", definition=None, extra=None):
    """The self-contained ``hyperparams.yaml`` of a model (template filled in).

    Arguments
    ---------
    settings : dict
        Model settings (see ``model_settings``); a w2v-BERT encoder is described by
        its config (see ``encoder_config``) and LoRA is off, unless ``settings``
        keeps ``lora_*`` values on purpose (a reference model before merging).
    threshold : float, optional
        Decision threshold (default: the template's).
    header : str
        Comment lines put on top.
    definition : str, optional
        Model definition file of ``hparams/`` (default: ``w2vbert_mfa.yaml``).
    extra : dict, optional
        Further top-level values (e.g. the ``interface`` class and its settings).

    Returns
    -------
    str
        YAML text, with the model definition inlined (no ``!include``).
    """
    # The settings become the include's overrides, under the template's model line.
    block = io.StringIO()
    ruamel.yaml.YAML().dump({"model": dict(settings)}, block)
    overrides_text = "".join("    " + line for line in block.getvalue().splitlines(True)[1:])
    model_line = f"model: !include:{W2VBERT_DEFINITION}\n"
    text = TEMPLATE.read_text(encoding="utf-8")
    if model_line not in text:
        raise ValueError(f"{TEMPLATE}: the line {model_line.strip()!r} is missing")
    include = f"model: !include:{definition or W2VBERT_DEFINITION}\n"
    text = text.replace(model_line, include + overrides_text, 1)
    overrides = dict(extra or {})
    if threshold is not None:
        overrides["threshold"] = float(threshold)
    stream = io.StringIO(text)
    stream.name = str(TEMPLATE)  # includes are found beside the template
    resolved = resolve_references(stream, overrides)
    # The comments of the source files end up in odd places once inlined.
    yaml = ruamel.yaml.YAML()
    tree = yaml.load(resolved)
    _strip_comments(tree)
    out = io.StringIO()
    yaml.dump(tree, out)
    return header + out.getvalue()


def _strip_comments(node):
    if hasattr(node, "ca"):
        node.ca.comment = None
        node.ca.items.clear()
        if hasattr(node.ca, "end"):
            node.ca.end = []
    if isinstance(node, dict):
        for value in node.values():
            _strip_comments(value)
    elif isinstance(node, list):
        for value in node:
            _strip_comments(value)
