"""Structured pruning of w2v-BERT: gates, counts, materialisation, reload."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoConfig,
    AutoModel,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
)
from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import (
    Wav2Vec2BertSelfAttention,
)

from speechbrain_w2vbert_sv.lobes.attention import enable_memory_efficient_attention
from speechbrain_w2vbert_sv.pruning import (
    GROUPS,
    EmptyConvolutionModule,
    GatedWav2Vec2Bert,
    HardConcreteGates,
    HeadlessSelfAttention,
    LagrangianSparsityController,
    PrunedWav2Vec2BertConfig,
    PrunedWav2Vec2BertModel,
    count_encoder_macs,
    count_encoder_params,
    encoder_layer_sizes,
    full_layer_keep,
    glu_rows,
)


def small_config(**overrides):
    settings = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        feature_projection_input_dim=16,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=6,
        right_max_position_embeddings=3,
        layerdrop=0.0,
        mask_time_prob=0.0,
        attn_implementation="eager",
    )
    settings.update(overrides)
    return Wav2Vec2BertConfig(**settings)


def real_num_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if n != "masked_spec_embed")


@pytest.fixture
def model():
    """Small model with every parameter perturbed (non-trivial biases and
    LayerNorm affines), in eval mode."""
    torch.manual_seed(0)
    model = Wav2Vec2BertModel(small_config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def inputs():
    torch.manual_seed(1)
    feats = torch.randn(2, 23, 16)
    mask = torch.ones(2, 23, dtype=torch.long)
    mask[1, 15:] = 0
    return feats, mask


def hidden_states(model, inputs):
    feats, mask = inputs
    with torch.no_grad():
        out = model(feats, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states


def assert_same_hidden_states(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


def set_gates(gated, layer_values):
    for index, values in enumerate(layer_values):
        for group, value in values.items():
            gated.gates[group][index].set_deterministic_values(value)


def mixed_values(sizes, generator):
    """Per layer: exact zeros, fractional values and ones, plus a layer with
    no heads and no ffn1 units and one with no channels and no ffn2 units."""
    layer_values = []
    for index, size in enumerate(sizes):
        values = {}
        for group in GROUPS:
            n = size[group]
            v = torch.rand(n, generator=generator) * 0.9 + 0.05
            v[torch.rand(n, generator=generator) < 0.35] = 0.0
            v[torch.rand(n, generator=generator) < 0.2] = 1.0
            values[group] = v
        layer_values.append(values)
    layer_values[1]["heads"].zero_()
    layer_values[1]["ffn1"].zero_()
    layer_values[2]["conv"].zero_()
    layer_values[2]["ffn2"].zero_()
    return layer_values


# Gates -------------------------------------------------------------------


def test_hard_concrete_sampling_matches_prob_nonzero():
    torch.manual_seed(0)
    gates = HardConcreteGates(5, init_drop_rate=0.5)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    samples = torch.stack([gates.sample() for _ in range(5000)])
    assert samples.min() == 0.0 and samples.max() == 1.0
    nonzero = (samples > 0).float().mean(0)
    torch.testing.assert_close(nonzero, gates.prob_nonzero().detach(), atol=0.025, rtol=0)
    # Louizos et al., eq. 12: P(z > 0) = sigmoid(log_alpha - beta log(-l/r)).
    expected = torch.sigmoid(gates.log_alpha - 2 / 3 * math.log(0.1 / 1.1))
    torch.testing.assert_close(gates.prob_nonzero(), expected)


def test_hard_concrete_init_and_deterministic_values():
    torch.manual_seed(0)
    heads = HardConcreteGates(1000, init_drop_rate=0.01)
    ffn = HardConcreteGates(1000, init_drop_rate=0.5)
    assert abs(torch.sigmoid(heads.log_alpha).mean().item() - 0.99) < 1e-3
    assert abs(torch.sigmoid(ffn.log_alpha).mean().item() - 0.5) < 1e-3
    assert torch.all(heads.eval()() == 1.0)
    target = torch.tensor([0.0, 0.1, 0.5, 0.93, 1.0, 0.0])
    gates = HardConcreteGates(6).eval()
    gates.set_deterministic_values(target)
    values = gates()
    torch.testing.assert_close(values, target, atol=1e-5, rtol=0)
    assert values[0] == 0.0 and values[-1] == 0.0 and values[4] == 1.0
    with pytest.raises(ValueError, match="init_drop_rate"):
        HardConcreteGates(3, init_drop_rate=1.0)
    with pytest.raises(ValueError, match="shape"):
        gates.set_deterministic_values(torch.ones(2))


# Counts --------------------------------------------------------------------


def test_full_size_count_is_w2v_bert_2():
    config = Wav2Vec2BertConfig()
    with torch.device("meta"):
        model = Wav2Vec2BertModel(config)
    count = count_encoder_params(config, full_layer_keep(encoder_layer_sizes(model)))
    assert int(count) == real_num_params(model) == 580_492_096


def test_counts_match_real_parameters(model):
    gated = GatedWav2Vec2Bert(model)
    assert gated.original_num_params == real_num_params(model)
    set_gates(gated, [{g: torch.ones(s[g]) for g in GROUPS} for s in encoder_layer_sizes(model)])
    assert abs(gated.expected_num_params().item() - real_num_params(model)) < 1e-3
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(3)))
    pruned = gated.materialize()
    assert real_num_params(pruned) == gated.deterministic_num_params()
    assert gated.deterministic_num_params() < 0.7 * gated.original_num_params


def test_expected_count_is_mean_of_sampled_counts(model):
    torch.manual_seed(0)
    gated = GatedWav2Vec2Bert(model)
    with torch.no_grad():
        for p in gated.gate_parameters():
            p.normal_(-1.0, 2.0)
        # Layers where "at least one unit kept" is far from certain.
        gated.gates["heads"][0].log_alpha.fill_(-3.0)
        gated.gates["conv"][1].log_alpha.fill_(-5.0)
    expected = gated.expected_num_params()
    expected.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gated.gate_parameters())
    config = model.config
    with torch.no_grad():
        counts = [
            count_encoder_params(
                config,
                [{g: (gated.gates[g][i].sample() > 0).double() for g in GROUPS} for i in range(3)],
            )
            for _ in range(1000)
        ]
    counts = torch.stack(counts)
    # Within 4 standard errors of the Monte-Carlo mean.
    assert abs(counts.mean() - expected) < 4 * counts.std() / len(counts) ** 0.5
    assert counts.std() < 0.1 * expected


def test_macs_match_flop_counter(model):
    gated = GatedWav2Vec2Bert(model)
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(4)))
    pruned = gated.materialize()
    gated.remove_hooks()
    feats = torch.randn(1, 50, 16)  # one second of audio
    for net in (model, pruned):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(feats)
        assert count_encoder_macs(net, seconds=1.0) == counter.get_total_flops() // 2
    assert count_encoder_macs(pruned) < 0.7 * count_encoder_macs(model)


# Materialisation -----------------------------------------------------------


def test_glu_rows_select_both_halves():
    torch.manual_seed(0)
    channels, index = 6, torch.tensor([1, 4, 5])
    weight, x = torch.randn(2 * channels, 5), torch.randn(5, 7)
    reference = F.glu(weight @ x, dim=0)[index]
    torch.testing.assert_close(F.glu(weight[glu_rows(index, channels)] @ x, dim=0), reference)
    # The buggy selection duplicates the first half.
    assert not torch.allclose(F.glu(weight[index.repeat(2)] @ x, dim=0), reference)


def test_all_kept_equals_original(model, inputs):
    reference = hidden_states(model, inputs)
    gated = GatedWav2Vec2Bert(model)
    set_gates(gated, [{g: torch.ones(s[g]) for g in GROUPS} for s in encoder_layer_sizes(model)])
    pruned = gated.materialize()
    gated.remove_hooks()
    assert_same_hidden_states(hidden_states(model, inputs), reference, atol=0)
    # With idx.repeat(2) the GLU halves would be wrong here.
    assert_same_hidden_states(hidden_states(pruned, inputs), reference, atol=1e-5)


def test_materialized_equals_gated(model, inputs):
    gated = GatedWav2Vec2Bert(model).eval()
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(5)))
    gated_out = hidden_states(gated, inputs)
    pruned = gated.materialize()
    assert isinstance(pruned, PrunedWav2Vec2BertModel)
    assert isinstance(pruned, Wav2Vec2BertModel)
    pruned_out = hidden_states(pruned, inputs)
    assert len(pruned_out) == 4
    assert_same_hidden_states(pruned_out, gated_out, atol=1e-4)
    # The gates matter: the unpruned model computes something else.
    gated.remove_hooks()
    assert not torch.allclose(hidden_states(model, inputs)[-1], pruned_out[-1], atol=1e-2)

    layers = pruned.encoder.layers
    config = pruned.config
    for index, layer in enumerate(layers):
        if config.layer_attention_heads[index]:
            assert isinstance(layer.self_attn, Wav2Vec2BertSelfAttention)
            assert layer.self_attn.num_heads == config.layer_attention_heads[index]
    assert isinstance(layers[1].self_attn, HeadlessSelfAttention)
    assert config.layer_ffn1_units[1] == 0 and config.layer_ffn2_units[2] == 0
    assert isinstance(layers[2].conv_module, EmptyConvolutionModule)


def test_memory_efficient_attention_applies(model, inputs):
    gated = GatedWav2Vec2Bert(model).eval()
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(10)))
    pruned = gated.materialize().eval()
    reference = hidden_states(pruned, inputs)
    assert enable_memory_efficient_attention(gated) == 3
    assert enable_memory_efficient_attention(pruned) == 2  # layer 1 is headless
    gated_out = hidden_states(gated, inputs)
    assert_same_hidden_states(hidden_states(pruned, inputs), reference, atol=1e-5)
    assert_same_hidden_states(gated_out, reference, atol=1e-4)


def test_pruned_model_trains_without_unused_parameters(model, inputs):
    gated = GatedWav2Vec2Bert(model)
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(6)))
    pruned = gated.materialize().train()
    feats, mask = inputs
    out = pruned(feats, attention_mask=mask, output_hidden_states=True)
    torch.stack(out.hidden_states).pow(2).mean().backward()
    unused = [n for n, p in pruned.named_parameters() if p.grad is None]
    assert unused == []


def test_gating_a_pruned_model(model, inputs):
    gated = GatedWav2Vec2Bert(model)
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(7)))
    pruned = gated.materialize()
    sizes = encoder_layer_sizes(pruned)
    assert sizes[1]["heads"] == 0 and sizes[2]["conv"] == 0
    regated = GatedWav2Vec2Bert(pruned).eval()
    assert regated.original_num_params == real_num_params(pruned)
    set_gates(regated, mixed_values(sizes, torch.Generator().manual_seed(8)))
    twice = regated.materialize()
    assert_same_hidden_states(
        hidden_states(twice, inputs), hidden_states(regated, inputs), atol=1e-4
    )
    assert real_num_params(twice) == regated.deterministic_num_params()


def test_save_and_reload(model, inputs, tmp_path):
    gated = GatedWav2Vec2Bert(model)
    set_gates(gated, mixed_values(encoder_layer_sizes(model), torch.Generator().manual_seed(9)))
    pruned = gated.materialize().eval()
    pruned.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PrunedWav2Vec2BertConfig)
    for loader in (AutoModel, PrunedWav2Vec2BertModel):
        reloaded = loader.from_pretrained(tmp_path).eval()
        assert type(reloaded) is PrunedWav2Vec2BertModel
        assert reloaded.config.layer_conv_channels == pruned.config.layer_conv_channels
        state, reference = reloaded.state_dict(), pruned.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in state)
        # The attention implementation is not saved (sdpa on reload).
        assert_same_hidden_states(
            hidden_states(reloaded, inputs), hidden_states(pruned, inputs), atol=1e-5
        )


def test_pruned_model_from_config_runs():
    config = PrunedWav2Vec2BertConfig(
        **small_config().to_dict() | {"model_type": "pruned-wav2vec2-bert"},
        layer_attention_heads=[0, 2, 4],
        layer_conv_channels=[0, 5, 32],
    )
    model = PrunedWav2Vec2BertModel(config).eval()
    # Initialised (not leftover memory): HF's small random weights, unit
    # LayerNorm scales, zero biases.
    assert all(p.abs().max() < 5 for p in model.parameters() if p.numel())
    assert torch.all(model.encoder.layers[0].self_attn.linear_out.bias == 0)
    assert torch.all(model.encoder.layers[1].ffn1_layer_norm.weight == 1)
    out = model(torch.randn(1, 9, 16)).last_hidden_state
    assert out.shape == (1, 9, 32) and torch.isfinite(out).all()
    assert real_num_params(model) == int(
        count_encoder_params(config, full_layer_keep(encoder_layer_sizes(model)))
    )


def test_training_mode_samples_and_propagates_gradients(model, inputs):
    torch.manual_seed(0)
    gated = GatedWav2Vec2Bert(model, ffn_drop_rate=0.5).train()
    feats, mask = inputs
    first = gated(feats, attention_mask=mask).last_hidden_state
    second = gated(feats, attention_mask=mask).last_hidden_state
    assert not torch.allclose(first, second)
    second.pow(2).mean().backward()
    assert all(p.grad is not None for p in gated.gate_parameters())


def test_bad_inputs():
    with pytest.raises(ValueError, match="Wav2Vec2BertModel"):
        GatedWav2Vec2Bert(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="position_embeddings_type"):
        GatedWav2Vec2Bert(Wav2Vec2BertModel(small_config(position_embeddings_type="rotary")))
    model = Wav2Vec2BertModel(small_config())
    GatedWav2Vec2Bert(model)
    with pytest.raises(ValueError, match="already"):
        GatedWav2Vec2Bert(model)
    with pytest.raises(ValueError, match="layer_attention_heads"):
        PrunedWav2Vec2BertConfig(num_hidden_layers=2, layer_attention_heads=[4])
    with pytest.raises(ValueError, match="target_sparsity"):
        LagrangianSparsityController(target_sparsity=1.2)


# Sparsity control ----------------------------------------------------------


def test_controller_reaches_target_sparsity():
    torch.manual_seed(0)
    gated = GatedWav2Vec2Bert(Wav2Vec2BertModel(small_config()))
    target, ramp = 0.8, 200
    controller = LagrangianSparsityController(target_sparsity=target, warmup_steps=ramp)
    gate_opt = torch.optim.Adam(gated.gate_parameters(), lr=0.05)
    lambda_opt = torch.optim.Adam(controller.parameters(), lr=0.05)
    for step in range(ramp + 100):
        term = controller(gated.expected_sparsity(), step)
        gate_opt.zero_grad()
        lambda_opt.zero_grad()
        term.backward()
        gate_opt.step()
        lambda_opt.step()
    assert controller.target(step) == target
    assert abs(gated.expected_sparsity().item() - target) < 0.02
    # Ascent on the multipliers: lambda2 only ever grows.
    assert controller.lambda2.item() > 1.0
