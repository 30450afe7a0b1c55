"""ASR transfer from the folders SpeechBrain's LibriSpeech Conformer recipe writes, and
SentencePiece CTC tokens.

The reference is laid out as ``recipes/LibriSpeech/ASR/transformer/hparams/
conformer_small.yaml`` lays it out (tiny sizes): its ``hyperparams.yaml`` saved by
``create_experiment_directory``, a Checkpointer folder ``save/CKPT+...`` with
``model.ckpt`` (``ModuleList [CNN, Transformer, seq_lin, ctc_lin]``) and
``normalizer.ckpt``, the SentencePiece ``tokenizer.ckpt`` collected into ``save/``; and
a pretrained folder as on the hub: ``asr.ckpt``, ``normalizer.ckpt``, ``tokenizer.ckpt``
and a ``hyperparams.yaml`` whose ``asr_model`` lists the modules with ``!ref``. The
SentencePiece model is trained on the Arabic Speech Commands transcripts.
"""

import pathlib
import shutil

import pytest
import sentencepiece
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_w2vbert_sv.data.audio import load_audio
from speechbrain_w2vbert_sv.data.ctc_tokens import CTCTokens
from speechbrain_w2vbert_sv.inference import export_model, load_model
from speechbrain_w2vbert_sv.lobes.asr_checkpoint import (
    LIBRISPEECH_CHECKPOINT_MODULES,
    load_asr_checkpoint,
)
from speechbrain_w2vbert_sv.lobes.asr_conformer import ConformerCTC
from speechbrain_w2vbert_sv.lobes.conformer_backbone import ConformerBackbone
from speechbrain_w2vbert_sv.lobes.conformer_frontend import ConformerFbank
from speechbrain_w2vbert_sv.lobes.heads import MFAHead
from speechbrain_w2vbert_sv.training.asr_distillation import (
    ConformerDistillationBrain,
    MultiTaskSpeakerModel,
)

RECIPES = pathlib.Path(__file__).resolve().parents[2] / "recipes" / "VoxCeleb"
VOCAB = 41  # conformer_mfa.yaml's vocab_size, so the shipped adaptor recipe fits
SHIPPED_DEFAULT = ["CNN", "Transformer", "ctc_lin"]  # the speaker recipes' default
SWAPPED = ["CNN", "Transformer", "ctc_lin", "seq_lin"]  # LibriSpeech's last two swapped

# conformer_small.yaml's model section at tiny sizes (SpeechBrain 1.x classes).
LIBRISPEECH_YAML = f"""
seed: 7775
output_folder: !PLACEHOLDER
save_folder: !ref <output_folder>/save
d_model: 32
nhead: 4
num_encoder_layers: 2
num_decoder_layers: 1
d_ffn: 64
output_neurons: {VOCAB}
n_mels: 40
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: (8, 10, 40)
    num_blocks: 2
    num_layers_per_block: 1
    out_channels: (8, 8)
    kernel_sizes: (3, 3)
    strides: (2, 2)
    residuals: (False, False)
Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    input_size: 80
    tgt_vocab: !ref <output_neurons>
    d_model: !ref <d_model>
    nhead: !ref <nhead>
    num_encoder_layers: !ref <num_encoder_layers>
    num_decoder_layers: !ref <num_decoder_layers>
    d_ffn: !ref <d_ffn>
    dropout: 0.0
    activation: !name:torch.nn.GELU
    encoder_module: conformer
    attention_type: RelPosMHAXL
    normalize_before: True
    causal: False
    kernel_size: 7
ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>
seq_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>
modules:
    CNN: !ref <CNN>
    Transformer: !ref <Transformer>
    seq_lin: !ref <seq_lin>
    ctc_lin: !ref <ctc_lin>
model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <Transformer>, !ref <seq_lin>, !ref <ctc_lin>]
epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
    limit: 1
normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 40
"""


def asc_transcripts(shared_data):
    """The keyword (transcript) of every training clip of Arabic Speech Commands."""
    rows = (shared_data / "arabic_speech_commands" / "train.csv").read_text().splitlines()[1:]
    return [row.split(",")[1] for row in rows]


@pytest.fixture(scope="module")
def tokenizer_file(shared_data, tmp_path_factory):
    """A SentencePiece model of VOCAB pieces trained on the ASC transcripts, with
    SpeechBrain's LibriSpeech ids (unk/blank 0, bos 1, eos 2)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "text.txt").write_text("\n".join(asc_transcripts(shared_data)) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(folder / "text.txt"),
        model_prefix=str(folder / "asc"),
        vocab_size=VOCAB,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return folder / "asc.model"


@pytest.fixture(scope="module")
def librispeech_folders(tokenizer_file, tmp_path_factory):
    """The recipe's Checkpointer folder and a pretrained folder, and the modules."""
    root = tmp_path_factory.mktemp("librispeech")
    yaml_file = root / "conformer_small_tiny.yaml"
    yaml_file.write_text(LIBRISPEECH_YAML)
    overrides = {"output_folder": str(root / "results")}
    torch.manual_seed(0)
    with open(yaml_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=str(yaml_file),
        overrides=overrides,
    )
    normalize = hparams["normalize"]
    normalize(hparams["compute_features"](torch.randn(4, 8000)), torch.ones(4))
    checkpointer = Checkpointer(
        hparams["save_folder"],
        {"model": hparams["model"], "normalizer": normalize, "counter": hparams["epoch_counter"]},
    )
    checkpoint = checkpointer.save_checkpoint().path
    shutil.copy(tokenizer_file, pathlib.Path(hparams["save_folder"]) / "tokenizer.ckpt")

    pretrained = root / "pretrained"
    pretrained.mkdir()
    torch.save(hparams["model"].state_dict(), pretrained / "asr.ckpt")
    normalize._save(pretrained / "normalizer.ckpt")
    shutil.copy(tokenizer_file, pretrained / "tokenizer.ckpt")
    hub_yaml = LIBRISPEECH_YAML.replace("\nmodel: !new:", "\nasr_model: !new:")
    (pretrained / "hyperparams.yaml").write_text(hub_yaml)
    return checkpoint, pretrained, hparams


def our_ctc_model():
    backbone = ConformerBackbone(
        n_mels=40,
        cnn_channels=(8, 8),
        d_model=32,
        nhead=4,
        num_layers=2,
        d_ffn=64,
        kernel_size=7,
    )
    return ConformerCTC(ConformerFbank(n_mels=40, norm_type="global"), backbone, VOCAB)


def speechbrain_log_probs(hparams, wavs, lens):
    """The encoder output and CTC log-probabilities of SpeechBrain's own modules."""
    cnn, transformer, _, ctc_lin = hparams["model"].eval()
    with torch.no_grad():
        feats = hparams["normalize"].eval()(hparams["compute_features"](wavs), lens)
        encoded = transformer.encode(cnn(feats), lens)
    return encoded, torch.log_softmax(ctc_lin(encoded), dim=-1)


def layout_folder(layout, librispeech_folders):
    checkpoint, pretrained, _ = librispeech_folders
    return checkpoint if layout == "checkpointer" else pretrained


@pytest.mark.parametrize("layout", ["checkpointer", "pretrained"])
@pytest.mark.parametrize("modules", [LIBRISPEECH_CHECKPOINT_MODULES, None])
def test_librispeech_layout_matches_speechbrain_modules(layout, modules, librispeech_folders):
    """Given, or (None) read from the folder's hyperparams.yaml, the order loads the
    CTC layer that SpeechBrain's modules use."""
    hparams = librispeech_folders[2]
    model = our_ctc_model()
    report = load_asr_checkpoint(
        layout_folder(layout, librispeech_folders),
        model=model,
        checkpoint_modules=modules,
        strict=True,
    )
    assert report.normalizer and not report.missing
    assert all(k.startswith("2.") for k in report.ignored if not k.startswith("1."))
    wavs, lens = 0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.7])
    encoded, expected = speechbrain_log_probs(hparams, wavs, lens)
    with torch.no_grad():
        out = model.eval()(wavs, lens)
    torch.testing.assert_close(out.encoder_out, encoded, atol=3e-6, rtol=0)
    torch.testing.assert_close(out.log_probs, expected, atol=3e-6, rtol=0)


@pytest.mark.parametrize("layout", ["checkpointer", "pretrained"])
@pytest.mark.parametrize("modules", [SHIPPED_DEFAULT, SWAPPED])
def test_order_that_contradicts_the_hyperparams_is_refused(layout, modules, librispeech_folders):
    """Strict or not: the swap has the shapes of the right order and loaded silently
    (the decoder's output layer as the CTC layer)."""
    folder = layout_folder(layout, librispeech_folders)
    for strict in (True, False):
        model = our_ctc_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError) as error:
            load_asr_checkpoint(folder, model=model, checkpoint_modules=modules, strict=strict)
        message = str(error.value)
        assert "\n" not in message and "hyperparams.yaml orders its ModuleList" in message
        assert f"[{', '.join(modules)}]" in message
        assert "[CNN, Transformer, seq_lin, ctc_lin]" in message
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_what_the_refused_swap_loads(librispeech_folders, tmp_path):
    """The checkpoint without its hyperparams.yaml: nothing to read the order from, and
    the swapped order gives other CTC outputs than SpeechBrain's."""
    checkpoint, _, hparams = librispeech_folders
    shutil.copy(checkpoint / "model.ckpt", tmp_path / "model.ckpt")
    model = our_ctc_model()
    load_asr_checkpoint(tmp_path, model=model, checkpoint_modules=SWAPPED)
    torch.testing.assert_close(model.ctc_lin.w.weight, hparams["seq_lin"].w.weight)
    wavs, lens = 0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.7])
    _, expected = speechbrain_log_probs(hparams, wavs, lens)
    model.frontend.load_normalizer(checkpoint / "normalizer.ckpt")
    with torch.no_grad():
        assert (model.eval()(wavs, lens).log_probs - expected).abs().max() > 0.5


def test_index_past_the_module_list_is_an_error_under_strict(librispeech_folders, tmp_path):
    """Without hyperparameters to read the order from, entry 3 of a four-entry
    ModuleList is still caught: before, it was dropped and seq_lin became ctc_lin."""
    checkpoint, _, hparams = librispeech_folders
    shutil.copy(checkpoint / "model.ckpt", tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match=r"entry 3 .* names only 3 entries"):
        load_asr_checkpoint(
            tmp_path, model=our_ctc_model(), checkpoint_modules=SHIPPED_DEFAULT, strict=True
        )
    model = our_ctc_model()
    report = load_asr_checkpoint(tmp_path, model=model, checkpoint_modules=SHIPPED_DEFAULT)
    assert {k for k in report.ignored if k.startswith("3.")} == {"3.w.weight", "3.w.bias"}
    # What the silent load did: seq_lin's weights in the CTC layer.
    torch.testing.assert_close(model.ctc_lin.w.weight, hparams["seq_lin"].w.weight)


def test_ctc_layer_is_checked_against_the_checkpoint_tokens(librispeech_folders, tmp_path):
    _, pretrained, _ = librispeech_folders
    shutil.copy(pretrained / "asr.ckpt", tmp_path / "asr.ckpt")
    (tmp_path / "label_encoder.txt").write_text(
        "'<blank>' => 0\n'yes' => 1\n'no' => 2\n================\n'starting_index' => 0\n"
        "'blank_label' => '<blank>'\n"
    )
    with pytest.raises(ValueError, match=rf"{VOCAB} outputs but .*label_encoder.txt has 3"):
        load_asr_checkpoint(
            tmp_path,
            model=our_ctc_model(),
            checkpoint_modules=LIBRISPEECH_CHECKPOINT_MODULES,
            strict=True,
        )


def test_sentencepiece_tokens_round_trip_the_transcripts(librispeech_folders, shared_data):
    checkpoint, pretrained, _ = librispeech_folders
    for folder in (pretrained, checkpoint):  # a CKPT folder: the tokenizer is in save/
        tokens = CTCTokens.from_path(folder)
        assert tokens.token_type == "sentencepiece" and len(tokens) == VOCAB
        assert tokens.blank_index == 0
    processor = sentencepiece.SentencePieceProcessor()
    processor.load(str(pretrained / "tokenizer.ckpt"))
    for text in sorted(set(asc_transcripts(shared_data)))[:40:3] + ["left right up"]:
        ids = tokens.encode(text)
        assert ids == processor.encode_as_ids(text)
        assert tokens.decode(ids) == processor.decode_ids(ids).split()
        # The exported form (pieces only, no model) decodes the same.
        assert CTCTokens.from_hparams(tokens.to_hparams()).decode(ids) == text.split()


def test_neither_token_file_names_both(tmp_path):
    with pytest.raises(ValueError, match="neither label_encoder.txt .* nor tokenizer.ckpt"):
        CTCTokens.from_path(tmp_path)


@pytest.fixture(scope="module")
def sentencepiece_asr_folder(tokenizer_file, tmp_path_factory):
    """The pretrained folder of the ASR recipe's model with a SentencePiece tokenizer
    instead of label_encoder.txt (untrained weights)."""
    folder = tmp_path_factory.mktemp("asr_sentencepiece")
    with open(RECIPES / "hparams" / "asr_conformer_ctc.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"data_folder": str(folder), "output_folder": str(folder)})
    torch.save(hparams["model"].state_dict(), folder / "asr.ckpt")
    hparams["normalize"]._save(folder / "normalizer.ckpt")
    shutil.copy(tokenizer_file, folder / "tokenizer.ckpt")
    return folder


def test_adaptor_export_transcribes_with_sentencepiece(
    sentencepiece_asr_folder, tokenizer_file, shared_data, tmp_path
):
    run = tmp_path / "adaptor"
    yaml_file = RECIPES / "hparams" / "conformer_adaptor.yaml"
    overrides = {
        "data_folder": str(shared_data),
        "output_folder": str(run),
        "asr_folder": str(sentencepiece_asr_folder),
    }
    with open(yaml_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sb.create_experiment_directory(
        experiment_directory=str(run), hyperparams_to_save=str(yaml_file), overrides=overrides
    )
    hparams["checkpointer"].save_checkpoint()

    model = load_model(export_model(run, tmp_path / "export"))
    assert model.hparams.token_type == "sentencepiece" and len(model.hparams.tokens) == VOCAB
    clips = sorted((shared_data / "arabic_speech_commands" / "dataset").glob("*/*.flac"))[:3]
    wavs = torch.stack([load_audio(c) for c in clips])
    lens = torch.tensor([1.0, 0.9, 0.6])
    words = model.transcribe_batch(wavs, lens)
    # Reference: SentencePiece's own decoding of the ASR model's best paths.
    processor = sentencepiece.SentencePieceProcessor()
    processor.load(str(tokenizer_file))
    asr = hparams["asr_model"].eval()
    with torch.no_grad():
        out = asr(wavs, lens)
    hyps = asr.greedy_decode(out.log_probs, out.lengths, blank_index=0)
    assert any(hyps)  # the check compares words, not empty strings
    assert words == [processor.decode_ids(h).split() for h in hyps]

    (sentencepiece_asr_folder / "tokenizer.ckpt").rename(tmp_path / "moved.ckpt")
    try:
        with pytest.raises(ValueError, match="neither label_encoder.txt .* nor tokenizer.ckpt"):
            export_model(run, tmp_path / "export2")
    finally:
        (tmp_path / "moved.ckpt").rename(sentencepiece_asr_folder / "tokenizer.ckpt")


def test_distillation_with_transcripts_and_sentencepiece(librispeech_folders, tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier

    from speechbrain_w2vbert_sv.lobes.losses import AAMSoftmaxLoss

    _, pretrained, _ = librispeech_folders
    teacher = our_ctc_model()
    load_asr_checkpoint(
        pretrained, model=teacher, checkpoint_modules=LIBRISPEECH_CHECKPOINT_MODULES
    )
    student = MultiTaskSpeakerModel(
        ConformerFbank(n_mels=40),
        ConformerBackbone(
            n_mels=40,
            cnn_channels=(8, 8),
            d_model=32,
            nhead=4,
            num_layers=2,
            d_ffn=64,
            kernel_size=7,
        ),
        MFAHead(3, 32, 4, 4, 8),
        vocab_size=VOCAB,
    )
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
            "teacher": teacher.freeze_model(),
            "asr_weight": 1.0,
            "asr_target": "transcript",
            "asr_tokens": str(pretrained),
            "blank_index": 0,
        },
        run_opts={"noprogressbar": True},
    )
    data = DynamicItemDataset(
        {
            "a": {"words": "yes", "label": 0},
            "b": {"words": "zoom_in left", "label": 1},
        }
    )
    data.add_dynamic_item(lambda w: 0.1 * torch.randn(8000), takes="words", provides="sig")
    data.add_dynamic_item(lambda lab: torch.tensor([lab]), takes="label", provides="spk_label")
    data.set_output_keys(["id", "sig", "spk_label"])
    batch = next(iter(brain.make_dataloader(data, sb.Stage.TRAIN, batch_size=2)))
    student.eval()
    predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    processor = sentencepiece.SentencePieceProcessor()
    processor.load(str(pretrained / "tokenizer.ckpt"))
    targets = [processor.encode_as_ids(w) for w in batch.words]
    log_probs = predictions[0].log_probs
    frames = torch.full((2,), log_probs.shape[1], dtype=torch.long)
    expected = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        torch.tensor(sum(targets, [])),
        frames,
        torch.tensor([len(t) for t in targets]),
        blank=0,
        zero_infinity=True,
    )
    assert abs(brain.aux_sums["asr_loss"] - float(expected.detach())) < 1e-4
