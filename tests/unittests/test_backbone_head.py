"""The w2v-BERT backbone with LoRA, the MFA head and the AAM loss."""

import pytest
import torch

from speechbrain_w2vbert_sv.lobes.heads import AttentiveStatisticsPooling, MFAHead
from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss
from speechbrain_w2vbert_sv.lobes.w2vbert_backbone import W2VBertBackbone
from tests.tiny_models import SMALL_W2VBERT

SMALL = SMALL_W2VBERT


def _randomise_lora(backbone):
    # LoRA B starts at zero, which would make every merge test pass trivially.
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)


def test_hidden_states_shape_and_settings():
    backbone = W2VBertBackbone(config=dict(SMALL, layerdrop=0.5, mask_time_prob=0.3))
    assert backbone.model.config.layerdrop == 0.0
    assert not hasattr(backbone.model, "masked_spec_embed")
    backbone.train()
    hidden, lengths = backbone(torch.randn(3, 11, 160), torch.tensor([1.0, 0.5, 0.8]))
    # layerdrop off: every layer is always there, even in training
    assert hidden.shape == (3, 3, 11, 32)
    assert torch.equal(lengths, torch.tensor([1.0, 0.5, 0.8]))


def test_frozen_backbone_grads_reach_only_lora_and_head():
    backbone = W2VBertBackbone(config=SMALL, freeze=True, lora_rank=4, lora_alpha=8)
    _randomise_lora(backbone)
    head = MFAHead(3, 32, adapter_size=8, attention_channels=4, embedding_size=16)
    hidden, lengths = backbone(torch.randn(2, 9, 160), torch.tensor([1.0, 0.7]))
    head(hidden, lengths).pow(2).sum().backward()
    for name, param in backbone.named_parameters():
        if "lora_" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None and not param.requires_grad, name
    assert all(p.grad is not None for p in head.parameters())


def test_lora_trainable_count_matches_rank():
    backbone = W2VBertBackbone(config=SMALL, freeze=True, lora_rank=4, lora_alpha=8)
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    # q and v of each layer: A [r, D] + B [D, r]
    assert trainable == 2 * 2 * (4 * 32 + 32 * 4)


def test_lora_merge_equivalence_and_save_reload(tmp_path):
    torch.manual_seed(0)
    backbone = W2VBertBackbone(config=SMALL, freeze=True, lora_rank=4, lora_alpha=8).eval()
    _randomise_lora(backbone)
    feats, lengths = torch.randn(2, 13, 160), torch.tensor([1.0, 0.6])
    reference, _ = backbone(feats, lengths)

    merged = backbone.merged_model()
    assert type(merged).__name__ == "Wav2Vec2BertModel"
    assert backbone.has_lora  # merged_model leaves the module itself untouched
    merged.save_pretrained(tmp_path / "merged")
    reloaded = W2VBertBackbone(source=str(tmp_path / "merged")).eval()
    out, _ = reloaded(feats, lengths)
    assert (out - reference).abs().max() < 1e-5
    # merging made a difference: the plain random encoder gives something else
    plain = W2VBertBackbone(config=SMALL).eval()
    plain.load_state_dict({k: v for k, v in reloaded.state_dict().items()}, strict=True)
    assert (plain(feats, lengths)[0] - reference).abs().max() < 1e-5


def test_lora_checkpoint_loads_merged_into_plain_backbone():
    torch.manual_seed(0)
    lora = W2VBertBackbone(config=SMALL, lora_rank=4, lora_alpha=8).eval()
    _randomise_lora(lora)
    feats = torch.randn(1, 10, 160)
    reference, _ = lora(feats)
    plain = W2VBertBackbone(config=SMALL).eval()
    plain.load_state_dict(lora.state_dict(), strict=True)
    assert (plain(feats)[0] - reference).abs().max() < 1e-5
    assert (lora.merged_model()(feats).last_hidden_state - reference[-1]).abs().max() < 1e-5


def test_padding_invariance_of_backbone_and_head():
    torch.manual_seed(0)
    backbone = W2VBertBackbone(config=SMALL).eval()
    head = MFAHead(3, 32, adapter_size=8, attention_channels=4, embedding_size=16).eval()
    short = torch.randn(1, 7, 160)
    batch = torch.cat([short, torch.zeros(1, 5, 160)], dim=1)
    batch = torch.cat([batch, torch.randn(1, 12, 160)])
    alone = head(*backbone(short))
    padded = head(*backbone(batch, torch.tensor([7 / 12, 1.0])))
    assert (alone[0] - padded[0]).abs().max() < 1e-4


def test_pooling_matches_explicit_statistics():
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(channels=6, attention_channels=3).eval()
    x = torch.randn(1, 5, 6)
    out = pool(x)
    weights = torch.softmax(pool.attention(x.transpose(1, 2)), dim=-1)[0]  # [C, T]
    frames = x[0].T
    mean = (weights * frames).sum(-1)
    std = ((weights * (frames - mean[:, None]) ** 2).sum(-1)).sqrt()
    assert torch.allclose(out[0], torch.cat([mean, std]), atol=1e-5)


def test_head_rejects_wrong_number_of_hidden_states():
    head = MFAHead(3, 32, adapter_size=8, attention_channels=4, embedding_size=16)
    with pytest.raises(ValueError, match="3 hidden states"):
        head(torch.randn(4, 1, 5, 32))


def test_default_head_size_is_the_papers():
    head = MFAHead()
    assert abs(sum(p.numel() for p in head.parameters()) / 1e6 - 6.16) < 0.01


def test_aam_loss_matches_arcface_formula():
    torch.manual_seed(0)
    cosine = torch.rand(4, 5) * 2 - 1
    targets = torch.tensor([0, 3, 2, 4])
    loss = AAMSoftmaxLoss(margin=0.3, scale=10.0, easy_margin=True)
    theta = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
    logits = cosine.clone()
    for i, t in enumerate(targets):
        if cosine[i, t] > 0:
            logits[i, t] = torch.cos(theta[i, t] + 0.3)
    expected = torch.nn.functional.cross_entropy(10.0 * logits, targets)
    assert torch.allclose(loss(cosine, targets[:, None]), expected, atol=1e-5)
    plain = torch.nn.functional.cross_entropy(10.0 * cosine, targets)
    no_margin = AAMSoftmaxLoss(margin=0.0, scale=10.0, easy_margin=True)
    assert torch.allclose(no_margin(cosine, targets[:, None]), plain, atol=1e-5)


def test_full_size_counts_are_w2vbert2_and_papers():
    from speechbrain_w2vbert_sv.sizes import full_size_counts

    counts = full_size_counts(lora_rank=64)
    assert counts["encoder"] == 580_492_096  # 580.49 M
    assert counts["lora_trainable"] == 24 * 2 * 2 * 64 * 1024  # about 6.29 M
    assert abs(counts["head"] / 1e6 - 6.16) < 0.01
