"""Our models in SpeechBrain's recipe slots (compute_features -> mean_var_norm ->
embedding_model), and the export of such runs: what it carries over, what it refuses."""

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization

from speechbrain_w2vbert_sv.inference import export_model, load_model
from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
from speechbrain_w2vbert_sv.lobes.embedding_model import (
    FeatureEmbeddingModel,
    SpeakerEmbeddingModel,
)
from speechbrain_w2vbert_sv.lobes.heads import LayerSumHead, MFAHead
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from speechbrain_w2vbert_sv.lobes.w2vbert_frontend import (
    W2VBertFbank,
    W2VBertFeatureNormalization,
    W2VBertLogMel,
)
from tests.tiny_models import SMALL_W2VBERT, small_w2vbert_model
from tests.unittests.test_user_errors import cli_error


def _wavs(batch=3, samples=16000, seed=0):
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _slots(model):
    """SpeechBrain's chain around the backbone and head of a waveform-in model."""
    features, normalization = W2VBertLogMel(), W2VBertFeatureNormalization()
    embedding_model = FeatureEmbeddingModel(model.backbone, model.head).eval()

    def embed(wavs, lens=None):
        return embedding_model(normalization(features(wavs), lens), lens)

    return embed


def _lora_frozen():
    torch.manual_seed(0)
    backbone = W2VBertBackbone(config=SMALL_W2VBERT, freeze=True, lora_rank=4, lora_alpha=8)
    for name, param in backbone.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters count
            param.data.normal_(0, 0.1)
    return backbone, _mfa_head()


def _pruned():
    torch.manual_seed(0)
    config = {
        **SMALL_W2VBERT,
        "model_type": "pruned-wav2vec2-bert",
        "layer_attention_heads": [2, 4],
        "layer_conv_channels": [5, 32],
    }
    return W2VBertBackbone(config=config), _mfa_head()


def _ecapa_on_layers():
    torch.manual_seed(0)
    ecapa = ECAPA_TDNN(32, channels=[16, 16, 16, 16, 48], lin_neurons=8)
    return W2VBertBackbone(config=SMALL_W2VBERT, freeze=True), LayerSumHead(3, ecapa)


def _mfa_head():
    return MFAHead(
        num_hidden_states=3, input_size=32, adapter_size=8, attention_channels=4, embedding_size=16
    )


@torch.no_grad()
@pytest.mark.parametrize("make", [_lora_frozen, _pruned, _ecapa_on_layers])
def test_w2vbert_slots_equal_the_whole_model_unpadded(make):
    """Every w2v-BERT family (MFA with LoRA on a frozen encoder, the pruned encoder,
    ECAPA-TDNN on the layers) gives in SpeechBrain's slots what the whole model gives."""
    backbone, head = make()
    model = SpeakerEmbeddingModel(W2VBertFbank(), backbone, head).eval()
    wavs = _wavs()
    expected = model(wavs)
    assert torch.allclose(_slots(model)(wavs), expected, atol=1e-6)
    assert torch.allclose(_slots(model)(wavs, torch.ones(3)), expected, atol=1e-6)
    # The features themselves: those of the whole front end (HF's, see test_frontend).
    feats = W2VBertFeatureNormalization()(W2VBertLogMel()(wavs))
    assert torch.equal(feats, W2VBertFbank()(wavs)[0])


@torch.no_grad()
def test_w2vbert_slots_padded_within_a_frame_of_the_whole_model():
    """Relative lengths at the frame rate (SpeechBrain's convention) may count one
    frame more or less than the waveform has: close, not equal, for padded ones."""
    model = small_w2vbert_model().eval()
    wavs = _wavs()
    lens = torch.tensor([1.0, 0.73, 0.5])
    wavs[1, int(0.73 * 16000) :] = 0
    wavs[2, 8000:] = 0
    slots = _slots(model)(wavs, lens)
    alone = torch.cat([model(wavs[i : i + 1, : round(float(lens[i]) * 16000)]) for i in range(3)])
    cosine = torch.nn.functional.cosine_similarity(slots[:, 0], alone[:, 0], dim=-1)
    assert cosine.min() > 0.99, cosine
    assert torch.allclose(slots[0], alone[0], atol=1e-6)  # the unpadded one: exact


@torch.no_grad()
def test_absolute_length_of_one_utterance_reads_as_full():
    """SpeechBrain's extract_speaker_embeddings.py passes ``torch.Tensor([samples])``."""
    model = small_w2vbert_model().eval()
    wav = _wavs(batch=1)
    expected = model(wav)
    assert torch.allclose(_slots(model)(wav, torch.Tensor([16000])), expected, atol=1e-6)
    with pytest.raises(ValueError, match="lengths must be relative"):
        _slots(model)(_wavs(batch=2), torch.Tensor([16000, 12000]))


@torch.no_grad()
def test_conformer_slots_are_speechbrains_own_and_exact():
    """SpeechBrain's Fbank + InputNormalization(sentence) feed the Conformer exactly
    the features of ConformerFbank, padded batches included."""
    torch.manual_seed(0)
    backbone = ConformerBackbone(
        n_mels=40, cnn_channels=[8, 8], d_model=16, nhead=2, num_layers=2, d_ffn=32, kernel_size=15
    )
    head = MFAHead(
        num_hidden_states=3, input_size=16, adapter_size=4, attention_channels=4, embedding_size=8
    )
    whole = SpeakerEmbeddingModel(ConformerFbank(n_mels=40), backbone, head).eval()
    slots = FeatureEmbeddingModel(backbone, head).eval()
    wavs, lens = _wavs(), torch.tensor([1.0, 0.8, 0.55])
    feats = InputNormalization(norm_type="sentence")(Fbank(n_mels=40)(wavs), lens)
    assert torch.allclose(slots(feats, lens), whole(wavs, lens), atol=1e-5)


def speechbrain_run(folder, slots_text, normalizer_stats=None):
    """A run folder as SpeechBrain's train_speaker_embeddings.py leaves it: the
    resolved ``hyperparams.yaml`` (anchors from ``modules`` to the checkpointer) and
    one checkpoint of the yaml's freshly built, random modules."""
    text = slots_text + (
        "checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer\n"
        f"    checkpoints_dir: {folder / 'save'}\n"
        "    recoverables:\n"
        "        embedding_model: *model\n"
        "        normalizer: *norm\n"
    )
    folder.mkdir(parents=True)
    (folder / "hyperparams.yaml").write_text(text, encoding="utf-8")
    torch.manual_seed(0)
    hparams = load_hyperpyyaml(text)
    checkpoint = folder / "save" / "CKPT+2026-12-07+00-00-00+00"
    checkpoint.mkdir(parents=True)
    (checkpoint / "CKPT.yaml").write_text("end-of-epoch: true\nunixtime: 0\n", encoding="utf-8")
    torch.save(hparams["embedding_model"].state_dict(), checkpoint / "embedding_model.ckpt")
    norm = hparams["mean_var_norm"]
    if isinstance(norm, InputNormalization):
        if normalizer_stats is not None:
            norm.train()
            norm(normalizer_stats)
        norm._save(checkpoint / "normalizer.ckpt")
    return hparams


TINY_CONFORMER_SLOTS = """\
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 20
mean_var_norm: &norm !new:speechbrain.processing.features.InputNormalization
    norm_type: global
embedding_model: &model !new:speechbrain_w2vbert_sv.lobes.embedding_model.FeatureEmbeddingModel
    backbone: !new:speechbrain_w2vbert_sv.lobes.conformer_backbone.ConformerBackbone
        n_mels: 20
        cnn_channels: [8, 8]
        d_model: 16
        nhead: 2
        num_layers: 2
        d_ffn: 32
        kernel_size: 15
    head: !new:speechbrain_w2vbert_sv.lobes.heads.MFAHead
        num_hidden_states: 3
        input_size: 16
        adapter_size: 4
        attention_channels: 4
        embedding_size: 8
"""


def test_global_normalization_statistics_are_carried_over(tmp_path):
    """A global InputNormalization learns its statistics in training: the export
    moves them from the run's ``normalizer.ckpt`` into the Conformer front end (the
    export's own check compares with the run's pipeline)."""
    stats = 3.0 + 2.0 * torch.randn(4, 50, 20)
    hparams = speechbrain_run(tmp_path / "run", TINY_CONFORMER_SLOTS, normalizer_stats=stats)
    export_model(tmp_path / "run", tmp_path / "exported")
    frontend = load_model(tmp_path / "exported").mods.embedding_model.frontend
    assert frontend.norm_type == "global"
    assert torch.allclose(frontend.global_mean, hparams["mean_var_norm"].glob_mean.flatten())
    assert torch.allclose(frontend.global_std, hparams["mean_var_norm"].glob_std.flatten())


W2VBERT_MODEL = """\
    backbone: !new:speechbrain_w2vbert_sv.lobes.w2vbert_backbone.W2VBertBackbone
        config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2,
                 intermediate_size: 32, feature_projection_input_dim: 80}
    head: !new:speechbrain_w2vbert_sv.lobes.heads.MFAHead
        num_hidden_states: 3
        input_size: 16
        adapter_size: 4
        attention_channels: 4
        embedding_size: 8
"""
# SpeechBrain's own ECAPA: not one of this package's models.
ECAPA_RUN = """\
compute_features: !new:speechbrain.lobes.features.Fbank
mean_var_norm: &norm !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: &model !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: 80
    channels: [16, 16, 16, 16, 48]
    lin_neurons: 8
"""
# Global statistics of the waveform: the exported front end has no such step.
WAVEFORM_GLOBAL_NORM_RUN = (
    """\
compute_features: !new:torch.nn.Identity
mean_var_norm: &norm !new:speechbrain.processing.features.InputNormalization
    norm_type: global
embedding_model: &model !new:speechbrain_w2vbert_sv.lobes.embedding_model.SpeakerEmbeddingModel
    frontend: !new:speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFbank
        num_mel_bins: 40
"""
    + W2VBERT_MODEL
)
# Features the exported definition does not compute (40 mel bins).
FEATURES_40_RUN = (
    """\
compute_features: !new:speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertLogMel
    num_mel_bins: 40
mean_var_norm: &norm !new:speechbrain_w2vbert_sv.lobes.w2vbert_frontend.W2VBertFeatureNormalization
embedding_model: &model !new:speechbrain_w2vbert_sv.lobes.embedding_model.FeatureEmbeddingModel
"""
    + W2VBERT_MODEL
)


@pytest.mark.parametrize(
    "slots, refusal",
    [
        (ECAPA_RUN, "embedding_model is speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"),
        (WAVEFORM_GLOBAL_NORM_RUN, "normalises the waveform"),
        (FEATURES_40_RUN, "W2VBertLogMel has num_mel_bins=40"),
    ],
)
def test_unsupported_pipelines_are_refused_in_one_line(tmp_path, slots, refusal):
    speechbrain_run(tmp_path / "run", slots)
    message = cli_error(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "o")])
    assert refusal in message and "the export supports" in message, message
