"""The backbone's memory_efficient_attention setting: switching on train()/eval()."""

import copy

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.speaker import EncoderClassifier, SpeakerRecognition
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

from speechbrain_w2vbert_sv.inference.interface import W2VBertSpeakerRecognition, load_model
from speechbrain_w2vbert_sv.inference.model_yaml import inference_hparams_text
from speechbrain_w2vbert_sv.lobes.attention import MemoryEfficientWav2Vec2BertSelfAttention
from speechbrain_w2vbert_sv.lobes.pruned_w2vbert import HeadlessSelfAttention
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from tests.tiny_models import SMALL_W2VBERT, small_w2vbert_model

EFFICIENT = MemoryEfficientWav2Vec2BertSelfAttention


def attention_classes(module):
    """The classes of the w2v-BERT attention modules of ``module``, in order."""
    return [type(m) for m in module.modules() if isinstance(m, Wav2Vec2BertSelfAttention)]


def randomise(backbone, seed=0):
    """Large random q/k weights, distance tables and LoRA B (HF's small initial values
    and LoRA's zero B would hide position and path errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if any(k in name for k in ("linear_q", "linear_k", "distance_embedding", "lora_B")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return backbone


def padded_features(length=30):
    gen = torch.Generator().manual_seed(length)
    return torch.randn(2, length, 160, generator=gen), torch.tensor([1.0, 0.6])


def test_default_switches_on_eval_and_back_on_train():
    backbone = W2VBertBackbone(config=SMALL_W2VBERT)
    assert backbone.memory_efficient_attention == "inference"
    assert attention_classes(backbone) == [Wav2Vec2BertSelfAttention] * 2  # built in train mode
    assert attention_classes(backbone.eval()) == [EFFICIENT] * 2
    assert attention_classes(backbone.train()) == [Wav2Vec2BertSelfAttention] * 2
    # Through a parent module, as SpeechBrain's Pretrained and Brain call it.
    model = small_w2vbert_model()
    assert attention_classes(model.eval()) == [EFFICIENT] * 2
    assert attention_classes(model.train()) == [Wav2Vec2BertSelfAttention] * 2


def test_frozen_encoder_without_lora_uses_it_in_training():
    # No gradients go through a frozen encoder without LoRA.
    frozen = W2VBertBackbone(config=SMALL_W2VBERT, freeze=True).train()
    assert attention_classes(frozen) == [EFFICIENT] * 2
    lora = W2VBertBackbone(config=SMALL_W2VBERT, freeze=True, lora_rank=2, lora_alpha=4).train()
    assert attention_classes(lora) == [Wav2Vec2BertSelfAttention] * 2
    lora.merge_lora()
    assert attention_classes(lora) == [EFFICIENT] * 2


@pytest.mark.parametrize("policy", [True, False])
def test_true_and_false_force_the_path(policy):
    backbone = W2VBertBackbone(config=SMALL_W2VBERT, memory_efficient_attention=policy)
    expected = [EFFICIENT if policy else Wav2Vec2BertSelfAttention] * 2
    assert attention_classes(backbone) == expected
    assert attention_classes(backbone.eval()) == expected
    assert attention_classes(backbone.train()) == expected
    backbone.memory_efficient_attention = not policy
    assert (
        attention_classes(backbone) == [EFFICIENT if not policy else Wav2Vec2BertSelfAttention] * 2
    )


def test_a_set_chunk_size_survives_eval():
    backbone = W2VBertBackbone(config=SMALL_W2VBERT).eval()
    attention = backbone.model.encoder.layers[0].self_attn
    attention.query_chunk_size = 3
    backbone.eval().train(False)  # e.g. embed_files: eval(), then the mode restored
    assert backbone.model.encoder.layers[0].self_attn.query_chunk_size == 3


@pytest.mark.parametrize("value", ["yes", 1, None, "Inference"])
def test_invalid_setting_is_a_one_line_error(value):
    message = r"^memory_efficient_attention must be True, False or 'inference', got .+$"
    with pytest.raises(ValueError, match=message):
        W2VBertBackbone(config=SMALL_W2VBERT, memory_efficient_attention=value)
    backbone = W2VBertBackbone(config=SMALL_W2VBERT)
    with pytest.raises(ValueError, match=message):
        backbone.memory_efficient_attention = value
    assert backbone.memory_efficient_attention == "inference"


@pytest.mark.parametrize(
    "settings",
    [{}, {"lora_rank": 4, "lora_alpha": 8}, {"freeze": True, "lora_rank": 4, "lora_alpha": 8}],
    ids=["plain", "lora", "frozen-lora"],
)
def test_outputs_match_hf_attention(settings):
    torch.manual_seed(0)
    reference = randomise(
        W2VBertBackbone(config=SMALL_W2VBERT, memory_efficient_attention=False, **settings)
    ).eval()
    ours = copy.deepcopy(reference)
    ours.memory_efficient_attention = "inference"
    assert attention_classes(reference) == [Wav2Vec2BertSelfAttention] * 2
    assert attention_classes(ours) == [EFFICIENT] * 2
    feats, lengths = padded_features()
    with torch.no_grad():
        expected, _ = reference(feats, lengths)
        got, _ = ours(feats, lengths)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The check can fail: the randomised positions matter.
    with torch.no_grad():
        ours.model.encoder.layers[1].self_attn.distance_embedding.weight.mul_(2.0)
        assert not torch.allclose(ours(feats, lengths)[0], expected, atol=1e-3)


def test_pruned_encoder_switches_except_headless_layers():
    config = dict(
        SMALL_W2VBERT,
        model_type="pruned-wav2vec2-bert",
        layer_attention_heads=[2, 0],
        layer_ffn1_units=[16, 8],
        layer_ffn2_units=[16, 8],
        layer_conv_channels=[8, 0],
    )
    torch.manual_seed(0)
    reference = randomise(W2VBertBackbone(config=config, memory_efficient_attention=False)).eval()
    ours = copy.deepcopy(reference)
    ours.memory_efficient_attention = "inference"
    assert isinstance(ours.model.encoder.layers[1].self_attn, HeadlessSelfAttention)
    assert attention_classes(ours) == [EFFICIENT]
    assert attention_classes(ours.train()) == [Wav2Vec2BertSelfAttention]
    ours.eval()
    feats, lengths = padded_features()
    with torch.no_grad():
        torch.testing.assert_close(ours(feats, lengths)[0], reference(feats, lengths)[0])


@pytest.fixture
def exported_folder(tmp_path):
    """A tiny exported folder (hyperparams.yaml + embedding_model.ckpt)."""
    small = {
        "w2vbert_source": None,
        "w2vbert_config": SMALL_W2VBERT,
        "num_hidden_states": 3,
        "hidden_size": 32,
        "adapter_size": 8,
        "attention_channels": 4,
        "embedding_size": 16,
    }
    text = inference_hparams_text(small, threshold=0.5)
    (tmp_path / "hyperparams.yaml").write_text(text)
    model = randomise(load_hyperpyyaml(text)["embedding_model"])
    torch.save(model.state_dict(), tmp_path / "embedding_model.ckpt")
    return tmp_path


@pytest.mark.parametrize("cls", [EncoderClassifier, SpeakerRecognition])
def test_speechbrain_stock_interfaces_use_it(exported_folder, cls):
    stock = cls.from_hparams(source=str(exported_folder))
    assert attention_classes(stock.mods) == [EFFICIENT] * 2
    ours = W2VBertSpeakerRecognition.from_hparams(source=str(exported_folder))
    gen = torch.Generator().manual_seed(0)
    wavs, lens = 0.1 * torch.randn(2, 8000, generator=gen), torch.tensor([1.0, 0.7])
    torch.testing.assert_close(stock.encode_batch(wavs, lens), ours.encode_batch(wavs, lens))


def test_interface_choice_survives_eval(exported_folder):
    model = load_model(exported_folder, memory_efficient_attention=False)
    assert attention_classes(model.mods) == [Wav2Vec2BertSelfAttention] * 2
    model.mods.eval()
    assert attention_classes(model.mods) == [Wav2Vec2BertSelfAttention] * 2
    model.use_memory_efficient_attention(True)
    assert attention_classes(model.mods.train()) == [EFFICIENT] * 2
    model.use_memory_efficient_attention("inference")
    assert attention_classes(model.mods) == [Wav2Vec2BertSelfAttention] * 2
    assert attention_classes(model.mods.eval()) == [EFFICIENT] * 2
    with pytest.raises(ValueError, match="memory_efficient_attention must be"):
        model.use_memory_efficient_attention("on")
