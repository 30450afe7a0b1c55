"""Import of the released checkpoints (paper code, WeSpeaker) and export to WeSpeaker,
checked against WeSpeaker's own code (``wespeaker-unofficial``) on small random models."""

import importlib.util
import pathlib
import shutil

import pytest
import soundfile
import torch
import yaml
from speechbrain.inference.classifiers import EncoderClassifier
from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

from speechbrain_w2vbert_sv.cli import main
from speechbrain_w2vbert_sv.inference import wespeaker_export
from speechbrain_w2vbert_sv.inference.checkpoint_import import (
    convert,
    import_checkpoint,
    random_model_state,
)
from speechbrain_w2vbert_sv.inference.interface import load_model
from speechbrain_w2vbert_sv.inference.source_checkpoints import read_source
from speechbrain_w2vbert_sv.inference.wespeaker_export import (
    ENCODER_FOLDER_NOTE,
    export_wespeaker,
    wespeaker_state_dict,
)
from tests.conftest import reference_missing
from tests.tiny_models import randomise_attention_scores
from tests.wespeaker_peer import (
    checkpoint_key_mismatch,
    load_wespeaker_folder,
    wespeaker_embed,
    wespeaker_modules,
)

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "layerdrop": 0.0,
}
EMBED, ADAPTER = 16, 8
# Measured differences to WeSpeaker's model: below 1e-6 (embeddings up to ~0.3); one
# layer's q and k weights swapped moves them by 9e-4 or more.
ATOL = 1e-5
# 16000 samples give 98 fbank frames (49 stacked), 16160 give 99: WeSpeaker's
# extractor then pads to 100 and pools a half-padded frame.
EVEN, ODD = 16000, 16160


@pytest.fixture(scope="module")
def peer():
    # Only WeSpeaker's absence skips: an ImportError inside its modules (a transformers
    # or peft change) fails the tests.
    if importlib.util.find_spec("wespeaker") is None:
        reference_missing(
            "wespeaker-unofficial not installed (pip install --no-deps wespeaker-unofficial==0.0.2)"
        )
    return wespeaker_modules()


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    """A random tiny encoder + the feature extractor's settings, as WeSpeaker loads them.

    Its q/k weights and distance tables are drawn anew: with HF's small initial values
    attention is nearly uniform, and a swapped, zeroed or misplaced score weight changes
    the embeddings by less than 1e-5."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    encoder = Wav2Vec2BertModel(Wav2Vec2BertConfig(**TINY))
    randomise_attention_scores(encoder, seed=0)
    encoder.save_pretrained(folder)
    SeamlessM4TFeatureExtractor().save_pretrained(folder)
    return folder


def build_wespeaker(peer, encoder_folder, seed=1, lora=None):
    """WeSpeaker's model, built as its loader does, with random head and statistics."""
    torch.manual_seed(seed)
    model = peer.mfa.W2VBert_Adapter_MFA(
        feat_dim=TINY["hidden_size"],
        embed_dim=EMBED,
        adapter_dim=ADAPTER,
        num_frontend_hidden_layers=TINY["num_hidden_layers"],
    )
    frontend = peer.frontend.W2VBertFrontend(
        model_name=str(encoder_folder),
        download_dir=str(encoder_folder),
        frozen=True,
        use_lora=lora is not None,
        lora_config_args=lora,
    )
    model.add_module("frontend", frontend)
    with torch.no_grad():
        norm = model.pooling.attention[2]
        norm.running_mean.normal_(0.0, 0.1)
        norm.running_var.uniform_(0.5, 2.0)
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: no update to test
                param.normal_(0.0, 0.2)
    return model.eval()


def save_wespeaker(model, folder, lora=None, wrap=False):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save({"state_dict": state} if wrap else state, folder / "avg_model.pt")
    args = {"model_name": "facebook/w2v-bert-2.0", "frozen": True, "use_lora": lora is not None}
    if lora:
        args["lora_config_args"] = lora
    config = {
        "model": "W2VBert_Adapter_MFA",
        "dataset_args": {"frontend": "w2vbert", "resample_rate": 16000, "w2vbert_args": args},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def wavs_of(samples, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, samples, generator=generator)


@pytest.fixture(scope="module")
def reference(peer, encoder_folder, tmp_path_factory):
    model = build_wespeaker(peer, encoder_folder)
    folder = save_wespeaker(model, tmp_path_factory.mktemp("wespeaker"), wrap=True)
    imported = import_checkpoint(folder, "wespeaker", folder / "imported")
    return model, folder, imported


def test_wespeaker_import_matches_wespeaker(reference):
    model, _, imported = reference
    ours = load_model(imported)
    assert ours.hparams.model["pooling_eps"] == 1e-5
    worst = 0.0
    for wavs in (wavs_of(EVEN), wavs_of(EVEN, batch=3, seed=1), wavs_of(3 * EVEN, seed=2)):
        with torch.no_grad():
            expected = wespeaker_embed(model, wavs)
        got = ours.encode_batch(wavs)[:, 0]
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        worst = max(worst, float((got - expected).abs().max()))
    print(f"WeSpeaker import: max |ours - WeSpeaker| = {worst:.3g}")
    # The same comparison fails for the model with one layer's q and k weights swapped.
    perturbed = load_model(imported)
    attention = perturbed.mods.embedding_model.backbone.model.encoder.layers[1].self_attn
    with torch.no_grad():
        query = attention.linear_q.weight.clone()
        attention.linear_q.weight.copy_(attention.linear_k.weight)
        attention.linear_k.weight.copy_(query)
        expected = wespeaker_embed(model, wavs_of(EVEN))
    with pytest.raises(AssertionError, match="not close"):
        torch.testing.assert_close(
            perturbed.encode_batch(wavs_of(EVEN))[:, 0], expected, atol=ATOL, rtol=0
        )
    # SpeechBrain's stock class reads the folder, and the card is there.
    stock = EncoderClassifier.from_hparams(source=str(imported))
    torch.testing.assert_close(
        stock.encode_batch(wavs_of(EVEN)), ours.encode_batch(wavs_of(EVEN)), atol=1e-6, rtol=0
    )
    card = (imported / "README.md").read_text()
    assert "wespeaker" in card and "Apache-2.0" in card and "from_hparams" in card


def test_odd_frame_count_pools_only_valid_frames(reference):
    """WeSpeaker pads 99 frames to 100 and pools the half-padded last stacked frame;
    ours pools the valid frames: equal to WeSpeaker's head on the hidden states
    without that frame."""
    model, _, imported = reference
    wavs = wavs_of(ODD)
    with torch.no_grad():
        hidden_states, _ = model.frontend(wavs, torch.tensor([ODD]))
        without_half_frame = model(tuple(h[:, :-1] for h in hidden_states))[1]
        wespeaker = wespeaker_embed(model, wavs)
    got = load_model(imported).encode_batch(wavs)[:, 0]
    torch.testing.assert_close(got, without_half_frame, atol=ATOL, rtol=0)
    difference = float((got - wespeaker).abs().max())
    print(f"odd frame count: max |ours - WeSpeaker| = {difference:.3g}")
    assert difference > ATOL


def test_lora_and_merged_checkpoints_import_alike(peer, encoder_folder, tmp_path):
    lora = {"r": 4, "lora_alpha": 12, "lora_dropout": 0.0}
    model = build_wespeaker(peer, encoder_folder, seed=2, lora=lora)
    wavs = wavs_of(EVEN, batch=2)
    with torch.no_grad():
        expected = wespeaker_embed(model, wavs)
    lora_folder = save_wespeaker(model, tmp_path / "lora", lora=lora)
    assert any(
        "base_model.model" in k and "lora_A" in k for k in torch.load(lora_folder / "avg_model.pt")
    )
    model.frontend.encoder = model.frontend.encoder.merge_and_unload()
    model.frontend.use_lora = False
    merged_folder = save_wespeaker(model, tmp_path / "merged")

    from_lora = import_checkpoint(lora_folder, "wespeaker", tmp_path / "from_lora")
    from_merged = import_checkpoint(merged_folder, "wespeaker", tmp_path / "from_merged")
    a = torch.load(from_lora / "embedding_model.ckpt")
    b = torch.load(from_merged / "embedding_model.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        load_model(from_lora).encode_batch(wavs)[:, 0], expected, atol=ATOL, rtol=0
    )
    assert "scaling alpha/r = 3" in (from_lora / "hyperparams.yaml").read_text()
    # alpha is read from the configuration: WeSpeaker's default (32) gives other weights.
    config = yaml.safe_load((lora_folder / "config.yaml").read_text())
    del config["dataset_args"]["w2vbert_args"]["lora_config_args"]["lora_alpha"]
    (lora_folder / "config.yaml").write_text(yaml.safe_dump(config))
    default = import_checkpoint(lora_folder, "wespeaker", tmp_path / "default_alpha")
    c = torch.load(default / "embedding_model.ckpt")
    key = "backbone.model.encoder.layers.0.self_attn.linear_q.weight"
    assert (c[key] - a[key]).abs().max() > 1e-3


def test_round_trip_through_wespeaker_is_exact(reference, tmp_path, monkeypatch):
    _, _, imported = reference
    ours = load_model(imported)
    written = export_wespeaker(imported, tmp_path / "written" / "wespeaker")
    # Relocatable: nothing in it names where it was written.
    assert str(tmp_path) not in (written / "config.yaml").read_text()
    exported = pathlib.Path(shutil.move(written, tmp_path / "moved"))
    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert config["dataset_args"]["w2vbert_args"]["model_name"] == "w2vbert"
    # WeSpeaker's frontend first loads the encoder folder, then avg_model.pt replaces its
    # weights (a full-size export names the hub's encoder instead). Draw the folder's
    # weights anew: only the tensors of avg_model.pt can then give our embeddings.
    first = torch.load(imported / "embedding_model.ckpt")
    prefix = "backbone.model."
    encoder = {k[len(prefix) :]: v for k, v in first.items() if k.startswith(prefix)}
    in_folder = Wav2Vec2BertModel.from_pretrained(exported / "w2vbert")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in in_folder.state_dict().values():
            tensor.add_(torch.randn(tensor.shape, generator=generator))
    in_folder.save_pretrained(exported / "w2vbert")
    redrawn = Wav2Vec2BertModel.from_pretrained(exported / "w2vbert").state_dict()
    assert encoder.keys() <= redrawn.keys()
    assert not [k for k in encoder if torch.equal(redrawn[k], encoder[k])]
    # WeSpeaker's loader, from inside the moved folder as its card says, runs it and
    # gives our embeddings.
    with monkeypatch.context() as inside:
        inside.chdir(exported)
        theirs = load_wespeaker_folder(".")
    # Every tensor of avg_model.pt lands in WeSpeaker's model (its loader loads with
    # strict=False and would silently keep the folder's or the hub's encoder).
    missing, unexpected, mismatched = checkpoint_key_mismatch(theirs, exported / "avg_model.pt")
    assert not (missing or unexpected or mismatched), (
        f"strict load of avg_model.pt into WeSpeaker's model: {len(unexpected)} unexpected "
        f"tensors (e.g. {unexpected[:2]}), {len(missing)} missing (e.g. {missing[:2]}), "
        f"{len(mismatched)} of another shape (e.g. {mismatched[:2]})"
    )
    wavs = wavs_of(EVEN, batch=2, seed=3)
    with torch.no_grad():
        got = wespeaker_embed(theirs, wavs)
    expected = ours.encode_batch(wavs)[:, 0]
    print(f"round trip: max |WeSpeaker - ours| = {float((got - expected).abs().max()):.3g}")
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    card = (exported / "README.md").read_text()  # the source's card, WeSpeaker's usage
    assert "Apache-2.0" in card and "wespeaker.load_model" in card and "from_hparams" not in card
    assert ENCODER_FOLDER_NOTE in card
    again = import_checkpoint(exported, "wespeaker", tmp_path / "again")
    second = torch.load(again / "embedding_model.ckpt")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    def settings(folder):  # hyperparams.yaml without its header comments
        text = (folder / "hyperparams.yaml").read_text()
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert settings(imported) == settings(again)


# The architecture settings of facebook/w2v-bert-2.0's published config.json.
PUBLISHED = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feature_projection_input_dim": 160,
    "conv_depthwise_kernel_size": 31,
    "position_embeddings_type": "relative_key",
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
    "hidden_act": "swish",
    "layer_norm_eps": 1e-05,
    "add_adapter": False,
}


def test_published_architecture_is_written_as_the_hub_id(reference, tmp_path, monkeypatch):
    """As WeSpeaker's own published config: the hub id, no encoder folder (a model of
    that size is not built here: the tiny encoder stands in for it)."""
    assert wespeaker_export.is_published_architecture(Wav2Vec2BertConfig(**PUBLISHED))
    assert wespeaker_export.is_published_architecture(Wav2Vec2BertConfig())
    for change in ({"num_hidden_layers": 12}, {"hidden_size": 768}, {"hidden_act": "gelu"}):
        assert not wespeaker_export.is_published_architecture(
            Wav2Vec2BertConfig(**{**PUBLISHED, **change})
        )
    _, _, imported = reference
    monkeypatch.setattr(wespeaker_export, "is_published_architecture", lambda config: True)
    out = export_wespeaker(imported, tmp_path / "ws")
    settings = yaml.safe_load((out / "config.yaml").read_text())
    assert settings["dataset_args"]["w2vbert_args"]["model_name"] == "facebook/w2v-bert-2.0"
    assert not (out / "w2vbert").exists()
    assert ENCODER_FOLDER_NOTE not in (out / "README.md").read_text()


def paper_spk_model(encoder, adapters, attention, bottleneck):
    """The paper code's speaker model, ``Audio2Vec_based_Adapter``, as a module tree
    whose attribute names are those of the paper's code (read in its repository,
    ``ZXHY-82/w2v-BERT-2.0_SV`` at commit 98ff0e2), so that its state dict has the
    paper's key names whatever the importer assumes:

    - ``front``: ``AudioEncoder`` (``deeplab/pretrained/audio2vector/api.py``), whose one
      module is ``encoder``: the HF ``Wav2Vec2BertModel`` (the paper's copy of HF's
      modeling file keeps HF's attribute names) without ``masked_spec_embed``
      (``_setup_model`` deletes it), inside ``peft.get_peft_model`` for a LoRA stage;
      its feature extractor holds no weights;
    - ``adapter_layers``: a ``ModuleList`` of ``Sequential(Linear, LayerNorm, ReLU,
      Linear)``, one per hidden state (``recipes/DeepASV/local/spk_model.py``);
    - ``pooling``: ``ASP`` (``recipes/DeepASV/local/modules/pooling_v2.py``), whose
      ``attention`` is ``Sequential(Conv1d, ReLU, BatchNorm1d, Conv1d, Softmax)``;
    - ``bottleneck``: ``Linear``; ``drop`` (a ``Dropout``) holds no weights.

    ``adapters``, ``attention`` and ``bottleneck`` give the head's weights: each is
    loaded strictly into the paper's layers of the same structure.
    """
    nn = torch.nn
    width, adapter = adapters[0][0].in_features, adapters[0][0].out_features
    paper = nn.Module()
    paper.front = nn.Module()
    paper.front.encoder = encoder
    paper.adapter_layers = nn.ModuleList(
        nn.Sequential(
            nn.Linear(width, adapter), nn.LayerNorm(adapter), nn.ReLU(), nn.Linear(adapter, adapter)
        )
        for _ in adapters
    )
    pooled = adapter * len(adapters)
    channels = attention[0].out_channels
    paper.pooling = nn.Module()
    paper.pooling.attention = nn.Sequential(
        nn.Conv1d(pooled, channels, kernel_size=1),
        nn.ReLU(),
        nn.BatchNorm1d(channels),
        nn.Conv1d(channels, pooled, kernel_size=1),
        nn.Softmax(dim=2),
    )
    paper.bottleneck = nn.Linear(2 * pooled, bottleneck.out_features)
    paper.adapter_layers.load_state_dict(adapters.state_dict())
    paper.pooling.attention.load_state_dict(attention.state_dict())
    paper.bottleneck.load_state_dict(bottleneck.state_dict())
    return paper


def save_paper_checkpoint(state, path, classifier=True):
    """As the paper's trainer saves (``deeplab/core/trainer.py``): ``{"modules": {name:
    state dict}, "epoch_idx": n}``, each module's own state dict (a DDP module's
    ``.module``), so no ``module.`` prefix; the ``classifier`` (``ArcFace`` of
    ``recipes/DeepASV/local/spk_classifier.py``) is a separate module."""
    modules = {"spk_model": state}
    if classifier:
        modules["classifier"] = {"weight": torch.randn(10, EMBED)}
    torch.save({"modules": modules, "epoch_idx": 3}, path)
    return path


def paper_lora_encoder(encoder_folder, lora, weights):
    """The paper's stage-1 encoder: HF's model from ``encoder_folder`` without
    ``masked_spec_embed``, in ``get_peft_model`` with the LoRA configuration of the
    paper's ``create_lora_config`` (``linear_q``/``linear_v``, task
    ``FEATURE_EXTRACTION``), holding the weights of the peft-wrapped encoder
    ``weights`` (WeSpeaker's)."""
    from peft import LoraConfig, get_peft_model

    encoder = Wav2Vec2BertModel.from_pretrained(encoder_folder)
    del encoder.masked_spec_embed
    config = LoraConfig(
        **lora, target_modules=["linear_q", "linear_v"], bias="none", task_type="FEATURE_EXTRACTION"
    )
    encoder = get_peft_model(encoder, config)
    missing, unexpected = encoder.load_state_dict(weights.state_dict(), strict=False)
    assert not missing and all("masked_spec_embed" in k for k in unexpected), (missing, unexpected)
    return encoder


def paper_reference(model, wavs):
    """The paper code's inference: the extractor on one unpadded utterance, the encoder
    without attention mask (the paper's code calls the feature projection and the layers
    one by one, which is HF's forward without a mask), the MFA head."""
    extractor = model.frontend.processor
    feats = extractor(
        wavs[0].numpy(),
        sampling_rate=16000,
        return_tensors="pt",
        padding=False,
        return_attention_mask=False,
    ).input_features
    encoder = model.frontend.encoder.base_model.model
    return model(encoder(feats, output_hidden_states=True).hidden_states)[1]


PAPER_YAML = """\
peft_config: !apply:deeplab.pretrained.audio2vector.api.create_lora_config
    model_type: 'w2v-bert'
    r: 4
    lora_alpha: 6
    target_modules: ["linear_q", "linear_v"]
spk_model: !new:local.spk_model.Audio2Vec_based_Adapter
    peft_config: !ref <peft_config>
    n_mfa_layers: -1
"""


def test_paper_format_matches_its_inference(peer, encoder_folder, tmp_path):
    lora = {"r": 4, "lora_alpha": 6, "lora_dropout": 0.0}
    model = build_wespeaker(peer, encoder_folder, seed=3, lora=lora)
    wavs = wavs_of(2 * EVEN)
    with torch.no_grad():
        expected = paper_reference(model, wavs)
    encoder = paper_lora_encoder(encoder_folder, lora, model.frontend.encoder)
    spk_model = paper_spk_model(
        encoder, model.adapter_layers, model.pooling.attention, model.bottleneck
    )
    # Names of the paper's tree (see paper_spk_model), peft's LoRA names inside.
    keys = set(spk_model.state_dict())
    lora_q = "encoder.layers.0.self_attn.linear_q"
    assert {
        "front.encoder.base_model.model.feature_projection.projection.weight",
        f"front.encoder.base_model.model.{lora_q}.base_layer.weight",
        f"front.encoder.base_model.model.{lora_q}.lora_A.default.weight",
        f"front.encoder.base_model.model.{lora_q}.lora_B.default.weight",
        "adapter_layers.2.3.weight",
        "pooling.attention.2.running_var",
        "bottleneck.weight",
    } <= keys
    assert not [k for k in keys if "masked_spec_embed" in k]
    checkpoint = save_paper_checkpoint(spk_model.state_dict(), tmp_path / "ckpt_0001.pth")
    config = tmp_path / "s1.yaml"
    config.write_text(PAPER_YAML)
    out = import_checkpoint(checkpoint, "paper", tmp_path / "imported", config=config)
    got = load_model(out).encode_batch(wavs)[:, 0]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    card = (out / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "ckpt_0001.pth" in card


def test_pruned_paper_encoder_becomes_the_pruned_model(tmp_path):
    from speechbrain_w2vbert_sv.pruning import PrunedWav2Vec2BertConfig, PrunedWav2Vec2BertModel

    config = PrunedWav2Vec2BertConfig(
        **TINY,
        layer_attention_heads=[4, 0],
        layer_ffn1_units=[64, 0],
        layer_ffn2_units=[24, 64],
        layer_conv_channels=[32, 8],
    )
    torch.manual_seed(4)
    encoder = PrunedWav2Vec2BertModel(config).eval()
    randomise_attention_scores(encoder, seed=4)
    del encoder.masked_spec_embed
    from speechbrain_w2vbert_sv.lobes.heads import MFAHead

    head = MFAHead(3, 32, ADAPTER, ADAPTER, EMBED)
    # The paper's final pruned model: its plain (unwrapped) pruned encoder in front. Its
    # modeling file registers no weights for a block pruned whole (``self.ffn1 = None``,
    # ``self.self_attn = None`` in Wav2Vec2BertEncoderLayer) and its forward skips the
    # block: the same as ours with a zero output bias.
    spk_model = paper_spk_model(encoder, head.adapters, head.pooling.attention, head.embedding)
    layer = "front.encoder.encoder.layers.1."
    state = {
        k: v
        for k, v in spk_model.state_dict().items()
        if not k.startswith((layer + "ffn1", layer + "self_attn"))
    }
    save_paper_checkpoint(state, tmp_path / "pruned.pth", classifier=False)
    out = import_checkpoint(tmp_path / "pruned.pth", "paper", tmp_path / "imported")
    ours = load_model(out)
    config = ours.mods.embedding_model.backbone.model.config
    assert config.layer_attention_heads == [4, 0] and config.layer_ffn1_units == [64, 0]
    assert config.layer_ffn2_units == [24, 64]
    with torch.no_grad():
        encoder.encoder.layers[1].ffn1.output_dense.bias.zero_()
        encoder.encoder.layers[1].self_attn.linear_out.bias.zero_()
    wavs = wavs_of(EVEN)
    with torch.no_grad():
        feats, lens = ours.mods.embedding_model.frontend(wavs)
        hidden = torch.stack(encoder(feats, output_hidden_states=True).hidden_states)
        head.pooling.eps = 1e-5
        expected = head.eval()(hidden)[:, 0]
    torch.testing.assert_close(ours.encode_batch(wavs)[:, 0], expected, atol=ATOL, rtol=0)


def _rewrite(folder, edit):
    state = torch.load(folder / "avg_model.pt")
    state = state.get("state_dict", state)
    edit(state)
    torch.save(state, folder / "avg_model.pt")


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown", "unknown keys for the wespeaker format: extra.weight"),
        ("mixed", "mixed key sets: LoRA-wrapped encoder keys"),
        ("adapters", "the head has 2 layer adapters but the encoder returns 3 hidden states"),
        ("shape", "shape mismatch: bottleneck.weight is (16, 40) in the checkpoint but (16, 48)"),
        ("truncated", "not a readable PyTorch checkpoint, truncated or damaged"),
        ("text", "not a PyTorch checkpoint"),
        ("no_config", "config.yaml: missing"),
    ],
)
def test_bad_wespeaker_inputs_fail_before_writing(reference, tmp_path, case, message):
    _, source, _ = reference
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("avg_model.pt", "config.yaml"):
        (folder / name).write_bytes((source / name).read_bytes())
    if case == "unknown":
        _rewrite(folder, lambda s: s.update({"extra.weight": torch.ones(1)}))
    elif case == "mixed":

        def wrap_one(state):
            key = "frontend.encoder.encoder.layers.0.ffn1.output_dense.weight"
            wrapped = key.replace("encoder.encoder", "encoder.base_model.model.encoder")
            state[wrapped] = state.pop(key)

        _rewrite(folder, wrap_one)
    elif case == "adapters":
        _rewrite(folder, lambda s: [s.pop(k) for k in list(s) if k.startswith("adapter_layers.2.")])
    elif case == "shape":
        _rewrite(folder, lambda s: s.update({"bottleneck.weight": torch.ones(16, 40)}))
    elif case == "truncated":
        data = (folder / "avg_model.pt").read_bytes()
        (folder / "avg_model.pt").write_bytes(data[: len(data) // 2])
    elif case == "text":
        (folder / "avg_model.pt").write_text("not a checkpoint\n")
    elif case == "no_config":
        (folder / "config.yaml").unlink()
    with pytest.raises(ValueError) as error:
        import_checkpoint(folder, "wespeaker", tmp_path / "out")
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_bad_paper_inputs(reference, tmp_path):
    _, source, _ = reference
    state = torch.load(source / "avg_model.pt")["state_dict"]
    # A WeSpeaker state dict inside the paper's layout: the other format's keys.
    torch.save({"modules": {"spk_model": state}}, tmp_path / "a.pth")
    with pytest.raises(ValueError, match="try --format wespeaker"):
        import_checkpoint(tmp_path / "a.pth", "paper", tmp_path / "out")
    torch.save(state, tmp_path / "b.pth")
    with pytest.raises(ValueError, match="not a checkpoint of the paper's code"):
        import_checkpoint(tmp_path / "b.pth", "paper", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_line(reference, tmp_path, capsys):
    _, source, _ = reference
    out = tmp_path / "imported"
    main(["import", "--format", "wespeaker", "--checkpoint", str(source), "--output", str(out)])
    assert "imported" in capsys.readouterr().out
    for name, seed in (("a.wav", 0), ("b.wav", 1)):
        soundfile.write(tmp_path / name, wavs_of(EVEN, seed=seed)[0].numpy(), 16000)
    main(["verify", "--model", str(out), str(tmp_path / "a.wav"), str(tmp_path / "b.wav")])
    assert "score=" in capsys.readouterr().out
    main(["export", "--format", "wespeaker", "--model", str(out), "--output", str(tmp_path / "ws")])
    assert (tmp_path / "ws" / "avg_model.pt").is_file()
    with pytest.raises(SystemExit) as error:
        main(
            [
                "import",
                "--format",
                "paper",
                "--checkpoint",
                str(source / "config.yaml"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
    assert "w2vbert-sv import: error:" in str(error.value)


def test_import_holds_the_weights_once(tmp_path):
    """The imported model's parameters and buffers are the source file's (memory-mapped)
    tensors: a model built with weights of its own and then filled from the file would
    hold them twice (the peak memory of a full-size import, ``benchmarks/interop.py``)."""
    state = wespeaker_state_dict(
        random_model_state(TINY, adapter_size=ADAPTER, embedding_size=EMBED)
    )
    torch.save(state, tmp_path / "avg_model.pt")
    (tmp_path / "config.yaml").write_text("model: W2VBert_Adapter_MFA\n")
    source = read_source(tmp_path, "wespeaker")
    loaded = dict(source.state)
    _, model, _ = convert(source)
    tensors = model.state_dict()
    assert tensors.keys() == loaded.keys()
    shared = [k for k, v in tensors.items() if v.data_ptr() == loaded[k].data_ptr()]
    assert shared == list(tensors), f"copied: {[k for k in tensors if k not in shared][:3]}"
    # ... and the model computes with them.
    assert torch.isfinite(model(torch.randn(1, EVEN), torch.ones(1))).all()
