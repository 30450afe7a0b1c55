"""Memory-efficient relative-key attention against HF's w2v-BERT attention."""

import copy

import pytest
import torch
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

from speechbrain_w2vbert_sv.lobes.attention import (
    MemoryEfficientWav2Vec2BertSelfAttention,
    enable_memory_efficient_attention,
    relative_key_attention,
)

LEFT, RIGHT = 8, 4
# Shorter than the clamp range, equal to the band width, and several times longer.
LENGTHS = (3, LEFT + RIGHT + 1, 40)


def small_config(**kwargs):
    """Small w2v-BERT configuration whose clamping shows at short lengths."""
    settings = dict(
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=3,
        intermediate_size=96,
        feature_projection_input_dim=160,
        left_max_position_embeddings=LEFT,
        right_max_position_embeddings=RIGHT,
        layerdrop=0.0,
    )
    settings.update(kwargs)
    return Wav2Vec2BertConfig(**settings)


def model_pair(**kwargs):
    """HF model in eval mode and a copy switched to the efficient path."""
    torch.manual_seed(0)
    reference = Wav2Vec2BertModel(small_config(**kwargs)).eval()
    # Random distance table: HF initialises it with small values that would
    # hide position errors.
    for layer in reference.encoder.layers:
        torch.nn.init.normal_(layer.self_attn.distance_embedding.weight, std=1.0)
    ours = copy.deepcopy(reference)
    assert enable_memory_efficient_attention(ours, query_chunk_size=5) == 3
    return reference, ours


def padded_batch(length):
    """Features [2, length, 160] whose second item is padded after 2/3."""
    torch.manual_seed(length)
    feats = torch.randn(2, length, 160)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, max(1, 2 * length // 3) :] = 0
    return feats, mask


def hidden_states(model, feats, mask=None):
    out = model(feats, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states)


def slice_heads(attention, heads):
    """Keeps the first ``heads`` heads of an attention module, in place."""
    rows = heads * attention.head_size
    for name in ("linear_q", "linear_k", "linear_v"):
        old = getattr(attention, name)
        new = torch.nn.Linear(old.in_features, rows)
        new.weight.data.copy_(old.weight.data[:rows])
        new.bias.data.copy_(old.bias.data[:rows])
        setattr(attention, name, new)
    old = attention.linear_out
    new = torch.nn.Linear(rows, old.out_features)
    new.weight.data.copy_(old.weight.data[:, :rows])
    new.bias.data.copy_(old.bias.data)
    attention.linear_out = new


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("length", LENGTHS)
def test_whole_model_matches_hf(implementation, length):
    reference, ours = model_pair(attn_implementation=implementation)
    feats, mask = padded_batch(length)
    with torch.no_grad():
        for attention_mask in (None, mask):
            expected = hidden_states(reference, feats, attention_mask)
            got = hidden_states(ours, feats, attention_mask)
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_automatic_chunk_size_matches_hf():
    reference, ours = model_pair()
    enable_memory_efficient_attention(ours)
    feats, mask = padded_batch(40)
    with torch.no_grad():
        torch.testing.assert_close(
            hidden_states(ours, feats, mask),
            hidden_states(reference, feats, mask),
            atol=1e-4,
            rtol=1e-4,
        )


def naive_relative_key_attention(query, key, value, table, left, right, mask):
    """Independent loop-built bias and explicit softmax."""
    query_len, key_len = query.shape[2], key.shape[2]
    bias = torch.empty(*query.shape[:2], query_len, key_len)
    for i in range(query_len):
        for j in range(key_len):
            row = table[min(max(j - i, -left), right) + left]
            bias[:, :, i, j] = query[:, :, i] @ row
    scale = query.shape[-1] ** -0.5
    scores = (query @ key.transpose(-1, -2) + bias) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ value


@pytest.mark.parametrize("chunk", [1, 3, 100])
@pytest.mark.parametrize("query_len,key_len", [(7, 20), (20, 7), (11, 11)])
def test_function_matches_naive_reference(chunk, query_len, key_len):
    torch.manual_seed(chunk + query_len)
    query = torch.randn(2, 3, query_len, 8)
    key, value = torch.randn(2, 2, 3, key_len, 8).unbind(0)
    table = torch.randn(LEFT + RIGHT + 1, 8)
    key_mask = torch.ones(2, 1, 1, key_len, dtype=torch.bool)
    key_mask[1, ..., key_len // 2 :] = False
    expected = naive_relative_key_attention(query, key, value, table, LEFT, RIGHT, key_mask)
    for mask in (key_mask, torch.zeros(key_mask.shape).masked_fill(~key_mask, -1e9)):
        got = relative_key_attention(
            query,
            key,
            value,
            table,
            LEFT,
            RIGHT,
            attention_mask=mask,
            query_chunk_size=chunk,
        )
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_uneven_heads_match_hf_module():
    reference, _ = model_pair()
    slice_heads(reference.encoder.layers[1].self_attn, heads=3)
    ours = copy.deepcopy(reference)
    enable_memory_efficient_attention(ours, query_chunk_size=7)
    feats, mask = padded_batch(30)
    with torch.no_grad():
        torch.testing.assert_close(
            hidden_states(ours, feats, mask),
            hidden_states(reference, feats, mask),
            atol=1e-4,
            rtol=1e-4,
        )
        # The sliced module alone, fed HF's boolean mask.
        hidden = torch.randn(2, 30, 64)
        bool_mask = mask.bool()[:, None, None, :].expand(2, 1, 30, 30)
        expected, _ = reference.encoder.layers[1].self_attn(hidden, bool_mask)
        got, _ = ours.encoder.layers[1].self_attn(hidden, bool_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_zero_head_layer_outputs_linear_out_bias():
    _, ours = model_pair()
    attention = ours.encoder.layers[0].self_attn
    slice_heads(attention, heads=0)
    assert attention.linear_q.out_features == 0
    hidden = torch.randn(2, 9, 64)
    output, weights = attention(hidden)
    assert weights is None
    torch.testing.assert_close(output, attention.linear_out.bias.expand(2, 9, 64))
    feats, mask = padded_batch(9)
    assert torch.isfinite(ours(feats, attention_mask=mask).last_hidden_state).all()


def test_gradients_match_hf():
    # Nothing random in training mode (SpecAugment, convolution dropout), so the
    # two models compute the same function.
    reference, ours = model_pair(mask_time_prob=0.0, conformer_conv_dropout=0.0)
    reference.train()
    ours.train()
    feats, mask = padded_batch(25)
    grads = []
    for model in (reference, ours):
        model.zero_grad()
        model(feats, attention_mask=mask).last_hidden_state.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any("distance_embedding" in n for n in grads[1])
    for name, expected in grads[0].items():
        torch.testing.assert_close(grads[1][name], expected, atol=1e-7, rtol=1e-4, msg=name)


def test_attention_dropout_only_in_training():
    _, ours = model_pair(attention_dropout=0.5)
    attention = ours.encoder.layers[0].self_attn
    hidden = torch.randn(1, 12, 64)
    attention.eval()
    assert torch.equal(attention(hidden)[0], attention(hidden)[0])
    attention.train()
    assert not torch.allclose(attention(hidden)[0], attention(hidden)[0])


def test_switch_is_idempotent_and_keeps_state_dict(tmp_path):
    reference, ours = model_pair()
    keys = list(reference.state_dict())
    assert enable_memory_efficient_attention(ours) == 3
    assert list(ours.state_dict()) == keys
    assert all(
        isinstance(layer.self_attn, MemoryEfficientWav2Vec2BertSelfAttention)
        for layer in ours.encoder.layers
    )
    ours.save_pretrained(tmp_path)
    loaded = Wav2Vec2BertModel.from_pretrained(tmp_path).eval()
    assert type(loaded.encoder.layers[0].self_attn) is Wav2Vec2BertSelfAttention
    feats, _ = padded_batch(16)
    with torch.no_grad():
        torch.testing.assert_close(hidden_states(loaded, feats), hidden_states(ours, feats))
    assert enable_memory_efficient_attention(ours, enabled=False) == 0
    assert enable_memory_efficient_attention(ours, enabled=False) == 0
    assert all(
        type(layer.self_attn) is Wav2Vec2BertSelfAttention
        and "query_chunk_size" not in vars(layer.self_attn)
        for layer in ours.encoder.layers
    )


@pytest.mark.parametrize("switch_first", [True, False])
def test_peft_lora_before_or_after_switch(switch_first):
    import peft  # a dependency of the package: never skipped

    reference, _ = model_pair()
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["linear_q", "linear_v"],
        init_lora_weights=False,  # random B: the adapters change the output
    )
    ours = copy.deepcopy(reference)
    if switch_first:
        enable_memory_efficient_attention(ours)
    torch.manual_seed(1)
    peft.inject_adapter_in_model(lora, reference)
    torch.manual_seed(1)
    peft.inject_adapter_in_model(lora, ours)
    if not switch_first:
        assert enable_memory_efficient_attention(ours) == 3
    assert "lora" in type(ours.encoder.layers[0].self_attn.linear_q).__module__
    feats, mask = padded_batch(20)
    with torch.no_grad():
        torch.testing.assert_close(
            hidden_states(ours, feats, mask),
            hidden_states(reference, feats, mask),
            atol=1e-4,
            rtol=1e-4,
        )


def test_bad_arguments_raise_value_error():
    _, ours = model_pair()
    with pytest.raises(ValueError, match="query_chunk_size"):
        enable_memory_efficient_attention(ours, query_chunk_size=0)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        enable_memory_efficient_attention("model")
    query = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="distance_embeddings"):
        relative_key_attention(query, query, query, torch.randn(5, 8), LEFT, RIGHT)
