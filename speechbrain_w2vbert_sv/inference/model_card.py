"""The model card (``README.md``) of an exported or imported model folder.

It says what the model is, where its weights come from, their licence as far as known,
the EERs known for it with their source, and the three lines that load and use it, so
that the folder can go to a model hub as it is.

Example
-------
>>> card = model_card({"embedding_size": 16, "num_hidden_states": 3,
...                    "w2vbert_config": {"hidden_size": 32, "num_hidden_layers": 2}})
>>> card.splitlines()[5]
'# Speaker verification: speaker embeddings with Layer-Adapter MFA (SpeechBrain)'
>>> "from_hparams" in card
True
"""

CARD_FILE = "README.md"

PAPER_REPOSITORY = "https://github.com/ZXHY-82/w2v-BERT-2.0_SV"
PAPER_HUB = "https://huggingface.co/zl389/w2v-bert-2.0_SV"
PAPER = "arXiv:2510.04213 (Li, Cheng, Li: Enhancing Speaker Verification with w2v-BERT 2.0 and Knowledge Distillation-guided Structured Pruning)"  # noqa: E501
# Published results of the released files, as the paper's repository README lists them
# (Vox1-O / Vox1-E / Vox1-H EER %, training sets VoxCeleb2 + VoxBlink2).
PAPER_RESULTS = {
    "model_base_0.23.pth": "0.23 / 0.38 / 0.81 % (no large-margin fine-tuning)",
    "model_lmft_0.14.pth": "0.14 / 0.31 / 0.73 % (with large-margin fine-tuning)",
}
WESPEAKER_MODEL = "voxceleb_voxblink2_w2v_bert2_lora_adapterMFA_lm"

_USAGE = """```python
from speechbrain_w2vbert_sv.inference import W2VBertSpeakerRecognition
model = W2VBertSpeakerRecognition.from_hparams(source="{source}")
score, same_speaker = model.verify_files("enrol.wav", "test.wav")
```

SpeechBrain's own `EncoderClassifier.from_hparams(source=...)` loads the folder too
(`encode_batch` gives the same embeddings); the package `speechbrain_w2vbert_sv` must be
installed, as the hyperparameters name its classes.
"""


WESPEAKER_USAGE = """This folder is in WeSpeaker's format (`config.yaml` + `avg_model.pt`,
written by `w2vbert-sv export --format wespeaker`); WeSpeaker's runtime loads it:

```python
import wespeaker
model = wespeaker.load_model("{source}")
score = model.compute_similarity("enrol.wav", "test.wav")
```

WeSpeaker's pooling floors the variance at 1e-5 whatever this model was trained with.
"""
USE_HEADING = "## Use"


def _origin_section(origin):
    if origin is None:
        return [
            "## Weights",
            "",
            "Trained with `speechbrain_w2vbert_sv` (exported with `w2vbert-sv export`); the "
            "encoder started from `facebook/w2v-bert-2.0` (MIT licence).",
            "",
            "## Licence",
            "",
            "Set by whoever trained and publishes this model; the initial encoder weights "
            "are MIT-licensed.",
            "",
            "## Results",
            "",
            "None recorded with this folder: measure them with `w2vbert-sv score --model "
            "<folder> --trials ...`.",
        ]
    fmt, file = origin["format"], origin["file"]
    notes = [f"- {note}." for note in origin.get("notes", [])]
    if fmt == "paper":
        weights = (
            f"Converted by `w2vbert-sv import --format paper` from `{file}`, a checkpoint of "
            f"the code of {PAPER} ({PAPER_REPOSITORY}); the authors publish their checkpoints "
            f"at {PAPER_HUB}."
        )
        licence = (
            "The paper's repository is licensed CC BY-NC-SA 4.0 (non-commercial, share "
            "alike). The weights' terms are those their publisher states: check them at "
            f"{PAPER_HUB} before any use."
        )
        result = PAPER_RESULTS.get(file)
        results = (
            [
                f"Published for `{file}` (the paper's repository README, cosine scoring, "
                f"trained on VoxCeleb2 + VoxBlink2): Vox1-O / Vox1-E / Vox1-H EER {result}."
            ]
            if result
            else [
                f"The paper's repository README lists the EERs of its released files "
                f"({', '.join(PAPER_RESULTS)}); none is listed under `{file}`."
            ]
        )
    else:
        weights = (
            f"Converted by `w2vbert-sv import --format wespeaker` from WeSpeaker's model "
            f"`{file}` (WeSpeaker publishes `{WESPEAKER_MODEL}` among its pretrained models)."
        )
        licence = (
            "WeSpeaker's code is Apache-2.0. The weights' terms are those WeSpeaker states "
            "for its pretrained models: check them before any use."
        )
        results = [
            "WeSpeaker lists its pretrained models' results in its documentation "
            "(docs/pretrained.md); they are not reproduced here."
        ]
    return [
        "## Weights",
        "",
        weights,
        "",
        *notes,
        "",
        "## Licence",
        "",
        licence,
        "",
        "## Results",
        "",
        *results,
        "",
        "This converted copy computes the source code's embeddings (the conversion is "
        "tested against WeSpeaker's code, which runs the same network, within 1e-4); its "
        "EER has not been measured here: `w2vbert-sv score --model <folder> --trials ...` "
        "does.",
    ]


def model_card(settings, origin=None, source="<this folder or its hub id>", usage=_USAGE):
    """The ``README.md`` text of a model folder.

    Arguments
    ---------
    settings : dict
        The model settings of its ``hyperparams.yaml`` (``w2vbert_config``,
        ``num_hidden_states``, ``embedding_size``, ...).
    origin : dict, optional
        For an imported folder: ``format`` (``paper`` or ``wespeaker``), ``file`` (the
        source file's name) and ``notes`` (what the conversion did). None: a model
        trained with this package.
    source : str
        Shown in the usage lines.
    usage : str
        The usage section, with ``{source}`` (default: this package's interface;
        :data:`WESPEAKER_USAGE` for a folder in WeSpeaker's format).

    Returns
    -------
    str
        Markdown text.
    """
    config = settings.get("w2vbert_config")
    if config:
        pruned = config.get("model_type") == "pruned-wav2vec2-bert"
        encoder = (
            f"{'pruned ' if pruned else ''}w2v-BERT 2.0 encoder "
            f"({config.get('num_hidden_layers')} Conformer layers, hidden size "
            f"{config.get('hidden_size')})"
        )
    else:
        encoder = "Conformer encoder (as defined in hyperparams.yaml)"
    lines = [
        # Front matter first: model hubs read it from the top of the file.
        "---",
        "library_name: speechbrain",
        "tags: [speaker-verification, speaker-embedding, w2v-bert-2.0, speechbrain]",
        "---",
        "",
        "# Speaker verification: speaker embeddings with Layer-Adapter MFA (SpeechBrain)",
        "",
        f"A {settings.get('embedding_size')}-dimensional speaker embedding model: 16 kHz "
        f"waveform -> fbank front end -> {encoder} -> one Layer Adapter per hidden state "
        f"({settings.get('num_hidden_states')}) -> attentive statistics pooling (variance "
        f"floor {settings.get('pooling_eps', 1e-6):g}) -> linear embedding. Scores are "
        "cosine similarities; `threshold` in `hyperparams.yaml` sets the decision.",
        "",
        *_origin_section(origin),
        "",
        USE_HEADING,
        "",
        usage.format(source=source),
    ]
    return "\n".join(lines)
