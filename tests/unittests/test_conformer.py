"""System B: the ASR Conformer backbone, transfer from SpeechBrain ASR checkpoints,
the speaker adaptor and the distillation losses.

The reference ASR model is built from SpeechBrain's own classes, the way its
LibriSpeech Conformer recipes build it (ConvolutionFrontEnd + TransformerASR with a
Conformer encoder and an attention decoder, seq_lin and ctc_lin), and checkpointed
with SpeechBrain's Checkpointer as those recipes do (``model.ckpt`` holding the
``ModuleList [CNN, Transformer, seq_lin, ctc_lin]``, ``normalizer.ckpt``).
"""

import pathlib

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.linear import Linear
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.lobes.asr_checkpoint import load_asr_checkpoint
from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.lobes.speaker_adaptor import SpeakerAdaptorModel
from speechbrain_w2vbert_sv.training.asr_distillation import (
    ConformerDistillationBrain,
    MultiTaskSpeakerModel,
    ctc_posterior_kl,
)

N_MELS, VOCAB = 40, 7
ENCODER = dict(d_model=32, nhead=4, d_ffn=64, kernel_size=7)


def speechbrain_asr(num_layers=2):
    """A tiny ASR Conformer of SpeechBrain's classes, as its LibriSpeech recipes build it."""
    cnn = ConvolutionFrontEnd(
        input_shape=(8, 10, N_MELS),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=(8, 8),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )
    transformer = TransformerASR(
        tgt_vocab=VOCAB,
        input_size=N_MELS // 4 * 8,
        d_model=ENCODER["d_model"],
        nhead=ENCODER["nhead"],
        num_encoder_layers=num_layers,
        num_decoder_layers=1,
        d_ffn=ENCODER["d_ffn"],
        kernel_size=ENCODER["kernel_size"],
        dropout=0.1,
        activation=torch.nn.GELU,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    )
    seq_lin = Linear(input_size=ENCODER["d_model"], n_neurons=VOCAB)
    ctc_lin = Linear(input_size=ENCODER["d_model"], n_neurons=VOCAB)
    return torch.nn.ModuleList([cnn, transformer, seq_lin, ctc_lin])


def our_asr(num_layers=2, norm_type="global", **overrides):
    backbone = ConformerBackbone(
        n_mels=N_MELS, cnn_channels=(8, 8), num_layers=num_layers, **{**ENCODER, **overrides}
    )
    return ConformerCTC(ConformerFbank(n_mels=N_MELS, norm_type=norm_type), backbone, VOCAB)


@pytest.fixture(scope="module")
def asr_checkpoint(tmp_path_factory):
    """A SpeechBrain recipe checkpoint folder (model.ckpt + normalizer.ckpt) and its model."""
    torch.manual_seed(0)
    model = speechbrain_asr()
    fbank = Fbank(n_mels=N_MELS)
    normalize = InputNormalization(norm_type="global")
    normalize(fbank(torch.randn(4, 8000)), torch.ones(4))  # global statistics
    checkpointer = Checkpointer(
        tmp_path_factory.mktemp("asr_save"), {"model": model, "normalizer": normalize}
    )
    ckpt = checkpointer.save_checkpoint()
    return ckpt.path, model.eval(), fbank, normalize.eval()


def test_transfer_loads_every_encoder_key_and_reproduces_the_asr_model(asr_checkpoint):
    folder, reference, fbank, normalize = asr_checkpoint
    state = torch.load(folder / "model.ckpt")
    asr = our_asr()
    report = load_asr_checkpoint(folder, model=asr)

    decoder_parts = ("1.decoder.", "1.custom_tgt_module.", "1.positional_encoding_decoder.")
    encoder_keys = {
        k for k in state if k.startswith(("0.", "1.", "3.")) and not k.startswith(decoder_parts)
    }
    assert set(report.loaded) == encoder_keys
    assert report.missing == [] and report.unexpected == []
    assert set(report.ignored) == set(state) - encoder_keys  # decoder + seq_lin
    assert any(k.startswith("2.") for k in report.ignored)
    assert report.normalizer

    wavs, lens = torch.randn(3, 8000), torch.tensor([1.0, 0.8, 0.55])
    asr.eval()
    with torch.no_grad():
        cnn, transformer, _, ctc_lin = reference
        feats = normalize(fbank(wavs), lens)
        expected = torch.log_softmax(ctc_lin(transformer.encode(cnn(feats), lens)), dim=-1)
        out = asr(wavs, lens)
    torch.testing.assert_close(out.log_probs, expected, rtol=1e-4, atol=1e-4)
    assert out.hidden_states.shape[0] == 3  # block input + 2 blocks


def test_transfer_reports_unexpected_and_missing_keys(asr_checkpoint):
    folder = asr_checkpoint[0]
    shallow = our_asr(num_layers=1)
    report = load_asr_checkpoint(folder, model=shallow)
    assert report.unexpected and all(k.startswith("1.encoder.layers.1.") for k in report.unexpected)
    assert report.missing == []
    with pytest.raises(ValueError, match="strict"):
        load_asr_checkpoint(folder, model=our_asr(num_layers=1), strict=True)

    report = load_asr_checkpoint(folder, backbone=our_asr().backbone)  # no CTC head given
    assert any(k.startswith("3.") for k in report.ignored)


def test_transfer_shape_mismatch_names_key_and_shapes(asr_checkpoint):
    folder = asr_checkpoint[0]
    wider = our_asr(d_ffn=48)
    with pytest.raises(ValueError) as error:
        load_asr_checkpoint(folder, model=wider)
    message = str(error.value)
    assert "ffn" in message and "(64, 32)" in message and "(48, 32)" in message


def test_normaliser_statistics_must_match_the_front_end(asr_checkpoint, tmp_path):
    folder = asr_checkpoint[0]
    with pytest.raises(ValueError, match="norm_type"):
        load_asr_checkpoint(folder, model=our_asr(norm_type="sentence"))
    with pytest.raises(ValueError, match="no statistics"):
        our_asr(norm_type="global").frontend(torch.randn(1, 8000))
    torch.save(torch.ones(N_MELS), tmp_path / "normalizer.ckpt")  # not InputNormalization's
    with pytest.raises(ValueError, match=r"normalizer.ckpt: not a normaliser checkpoint"):
        our_asr().frontend.load_normalizer(tmp_path / "normalizer.ckpt")


def test_sentence_normalisation_matches_speechbrain_on_real_speech(shared_data):
    folder = shared_data / "arabic_speech_commands" / "dataset"
    wavs = [
        load_audio(folder / "five" / "00000007_NO_01.flac")[:12000],
        load_audio(folder / "send" / "00000007_NO_02.flac"),
    ]
    batch = torch.zeros(2, 16000)
    for row, wav in zip(batch, wavs):
        row[: len(wav)] = wav
    lens = torch.tensor([0.75, 1.0])
    ours, _ = ConformerFbank(n_mels=80)(batch, lens)
    reference = InputNormalization(norm_type="sentence")(Fbank(n_mels=80)(batch), lens)
    valid = round(0.75 * ours.shape[1])
    torch.testing.assert_close(ours[0, :valid], reference[0, :valid], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1], reference[1], rtol=1e-4, atol=1e-4)


def adaptor_pair(folder):
    """A frozen ASR model alone, and an adaptor model on an identical copy of it."""
    alone = our_asr()
    alone.load_asr_checkpoint(folder, strict=True)
    inner = our_asr()
    inner.load_asr_checkpoint(folder, strict=True)
    head = MFAHead(
        num_hidden_states=3, input_size=32, adapter_size=4, attention_channels=4, embedding_size=8
    )
    return alone.eval(), SpeakerAdaptorModel(inner, head)


def test_adaptor_keeps_the_asr_output_and_gradients_stay_out_of_it(asr_checkpoint):
    alone, model = adaptor_pair(asr_checkpoint[0])
    wavs, lens = torch.randn(4, 8000), torch.tensor([1.0, 0.9, 0.7, 0.6])
    asr_before = {k: v.clone() for k, v in model.asr_model.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}

    model.train()  # the frozen ASR model must stay in eval mode (no dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        out = model.recognize_and_embed(wavs, lens)
        out.embeddings.pow(2).sum().backward()
        assert all(p.grad is None for p in model.asr_model.parameters())
        assert all(p.grad is not None for p in model.head.parameters())
        optimizer.step()
        optimizer.zero_grad()

    for key, value in model.asr_model.state_dict().items():
        assert torch.equal(value, asr_before[key]), key
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    with torch.no_grad():
        expected = alone(wavs, lens).log_probs
    torch.testing.assert_close(model.recognize_and_embed(wavs, lens).log_probs, expected)


def test_adaptor_one_encoder_pass_gives_both_outputs(asr_checkpoint):
    _, model = adaptor_pair(asr_checkpoint[0])
    model.eval()
    calls = []
    model.asr_model.backbone.Transformer.encoder.register_forward_hook(
        lambda *args: calls.append(1)
    )
    wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.5])
    out = model.recognize_and_embed(wavs, lens)
    assert len(calls) == 1
    assert out.log_probs.shape == (2, 13, VOCAB) and out.embeddings.shape == (2, 1, 8)
    # The speaker-model contract (forward) gives the same embeddings, without the CTC.
    torch.testing.assert_close(model(wavs, lens), out.embeddings)


def test_student_initialised_from_teacher_starts_with_zero_asr_loss(asr_checkpoint):
    folder = asr_checkpoint[0]
    teacher = our_asr()
    teacher.load_asr_checkpoint(folder, strict=True)
    teacher.eval()
    student = MultiTaskSpeakerModel(
        ConformerFbank(n_mels=N_MELS, norm_type="global"),
        ConformerBackbone(n_mels=N_MELS, cnn_channels=(8, 8), num_layers=2, **ENCODER),
        MFAHead(3, 32, 4, 4, 8),
        vocab_size=VOCAB,
    )
    load_asr_checkpoint(folder, model=student, strict=True)
    student.eval()
    wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.7])
    out = student(wavs, lens, multitask=True)
    with torch.no_grad():
        target = teacher(wavs, lens)
    assert float(ctc_posterior_kl(out.log_probs.detach(), target.log_probs, lens)) < 1e-6
    torch.testing.assert_close(out.hidden_states, target.hidden_states)


RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb"


@pytest.fixture(scope="module")
def recipe_asr_folder(tmp_path_factory):
    """The pretrained folder train_asr_ctc.py writes, from its own hparams (untrained)."""
    folder = tmp_path_factory.mktemp("asr_pretrained")
    with open(RECIPES / "hparams" / "asr_conformer_ctc.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"data_folder": str(folder), "output_folder": str(folder)})
    torch.save(hparams["model"].state_dict(), folder / "asr.ckpt")
    hparams["normalize"]._save(folder / "normalizer.ckpt")
    return folder, hparams


@pytest.mark.parametrize("system", ["random", "asr_init", "distill", "adaptor"])
def test_speaker_recipes_build_on_the_asr_recipe(system, recipe_asr_folder, tmp_path):
    folder, asr_hparams = recipe_asr_folder
    overrides = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    if system != "random":
        overrides["asr_folder"] = str(folder)
    with open(RECIPES / "hparams" / f"conformer_{system}.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    model = hparams["embedding_model"].eval()
    wavs, lens = 0.1 * torch.randn(2, 16000), torch.tensor([1.0, 0.6])
    with torch.no_grad():
        assert model(wavs, lens).shape == (2, 1, 64)
    if system == "random":
        return
    # Strict transfer: the speaker encoder is the ASR recipe's encoder, weight for weight.
    reference = asr_hparams["Transformer"].state_dict()
    for key, value in model.backbone.Transformer.state_dict().items():
        assert torch.equal(value, reference[key]), key
    if system == "distill":
        teacher = hparams["teacher"]
        assert not any(p.requires_grad for p in teacher.parameters())
        assert all(p is not q for p in teacher.parameters() for q in model.parameters())
        assert hparams["brain_class"] is ConformerDistillationBrain
    if system == "adaptor":
        encoder = sum(p.numel() for p in model.frontend.parameters()) + sum(
            p.numel() for p in model.backbone.parameters()
        )
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trained == sum(p.numel() for p in model.head.parameters())
        assert trained <= 0.04 * encoder


def test_distillation_with_transcripts_uses_ctc_on_the_words(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.dataio.encoder import CTCTextEncoder
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier

    from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss

    encoder = CTCTextEncoder()
    encoder.update_from_iterable(["yes", "no", "up", "down", "left", "right"], sequence_input=False)
    encoder.insert_blank(index=0)
    encoder.save(tmp_path / "label_encoder.txt")
    student = MultiTaskSpeakerModel(
        ConformerFbank(n_mels=N_MELS),
        ConformerBackbone(n_mels=N_MELS, cnn_channels=(8, 8), num_layers=2, **ENCODER),
        MFAHead(3, 32, 4, 4, 8),
        vocab_size=VOCAB,
    )
    teacher = our_asr(norm_type="sentence").freeze_model()
    opt = lambda params: torch.optim.AdamW(params, lr=1e-3)  # noqa: E731
    brain = ConformerDistillationBrain(
        modules={
            "embedding_model": student,
            "classifier": Classifier(8, lin_blocks=0, out_neurons=2),
        },
        hparams={
            "compute_cost": AAMSoftmaxLoss(),
            "backbone_opt_class": opt,
            "head_opt_class": opt,
            "teacher": teacher,
            "asr_weight": 1.0,
            "asr_target": "transcript",
            "asr_label_encoder_file": str(tmp_path / "label_encoder.txt"),
        },
        run_opts={"noprogressbar": True},
    )
    data = DynamicItemDataset(
        {
            "a": {"words": "yes", "label": 0},
            "b": {"words": "left right", "label": 1},
        }
    )
    data.add_dynamic_item(lambda w: 0.1 * torch.randn(8000), takes="words", provides="sig")
    data.add_dynamic_item(lambda label: torch.tensor([label]), takes="label", provides="spk_label")
    data.set_output_keys(["id", "sig", "spk_label"])
    import speechbrain as sb

    batch = next(iter(brain.make_dataloader(data, sb.Stage.TRAIN, batch_size=2)))
    assert sorted(batch.words) == ["left right", "yes"]  # added by the Brain

    torch.manual_seed(0)
    student.eval()  # deterministic forward for the independent computation
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    out = predictions[0]
    targets = [encoder.encode_sequence(w.split()) for w in batch.words]
    frames = torch.full((2,), out.log_probs.shape[1], dtype=torch.long)
    expected_ctc = torch.nn.functional.ctc_loss(
        out.log_probs.transpose(0, 1),
        torch.tensor(sum(targets, [])),
        frames,
        torch.tensor([len(t) for t in targets]),
        blank=0,
        zero_infinity=True,
    )
    expected_ctc, loss = float(expected_ctc.detach()), float(loss.detach())
    assert abs(brain.aux_sums["asr_loss"] - expected_ctc) < 1e-4
    assert abs(loss - brain.aux_sums["speaker_loss"] - expected_ctc) < 1e-3
