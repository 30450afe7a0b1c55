"""Writes one generation of the tiny exported folders that ``test_legacy_exports.py`` loads.

Run it with the package of the version under test importable, from a checkout of that
version, e.g. for main at commit 0ff0bd5::

    git worktree add /tmp/main_0ff0bd5 0ff0bd5
    cd /tmp/main_0ff0bd5
    PYTHONPATH=$PWD python <repo>/tests/data/legacy_exports/make_exports.py main_0ff0bd5

It writes ``<this folder>/<subfolder>/{w2vbert_mfa,conformer_mfa}/``: each an export
(``export_model``, threshold 0.35) of a training folder of random weights defined by
that checkout's ``hparams/`` (w2v-BERT with LoRA rank 2, merged at export), plus
``expected_embeddings.pt``: that version's embeddings of ``inputs.pt`` (shared by all
generations; written by ``make_legacy_exports.py``, never rewritten here).

Only the API found at 0ff0bd5 and later is used (``speechbrain_w2vbert_sv.inference
.export_model``, ``speechbrain_w2vbert_sv.training.checkpoints.AtomicCheckpointer``);
31a7373's folders come from ``make_legacy_exports.py``.
"""

import argparse
import pathlib
import tempfile

import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

import speechbrain_w2vbert_sv
from speechbrain_w2vbert_sv.inference import export_model, load_model
from speechbrain_w2vbert_sv.training.checkpoints import AtomicCheckpointer

HERE = pathlib.Path(__file__).resolve().parent
# The definitions of the version under test, not of the checkout holding this script.
PACKAGE = pathlib.Path(speechbrain_w2vbert_sv.__file__).resolve().parent
HPARAMS = PACKAGE.parent / "hparams"

W2VBERT = """\
output_folder: {output}
model: !include:{definitions}/w2vbert_mfa.yaml
    w2vbert_source: null
    w2vbert_config:
        hidden_size: 16
        num_hidden_layers: 2
        num_attention_heads: 2
        intermediate_size: 32
        left_max_position_embeddings: 8
        right_max_position_embeddings: 4
    num_hidden_states: 3
    hidden_size: 16
    adapter_size: 8
    attention_channels: 4
    embedding_size: 8
    lora_rank: 2
    lora_alpha: 4
embedding_model: !ref <model[embedding_model]>
"""

CONFORMER = """\
output_folder: {output}
model: !include:{definitions}/conformer_mfa.yaml
    n_mels: 20
    cnn_channels: [8, 8]
    d_model: 16
    nhead: 2
    num_layers: 2
    d_ffn: 32
    adapter_size: 8
    attention_channels: 4
    embedding_size: 8
embedding_model: !ref <model[embedding_model]>
"""

MODELS = (("w2vbert_mfa", W2VBERT, 1), ("conformer_mfa", CONFORMER, 2))


def _random_run(folder, text, seed):
    """A training folder holding a resolved yaml and one checkpoint of random weights
    (LoRA adapters included, so that merging them changes the weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    train_yaml = folder / "train.yaml"
    train_yaml.write_text(text.format(output=folder, definitions=HPARAMS))
    with open(train_yaml) as f:
        (folder / "hyperparams.yaml").write_text(resolve_references(f).getvalue())
    model = load_hyperpyyaml(train_yaml.read_text())["embedding_model"]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(1.0 + torch.rand(buffer.shape, generator=gen))
    AtomicCheckpointer(folder / "save", {"embedding_model": model}).save_checkpoint(
        meta={"EER": 0.5}
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subfolder", help="generation name, e.g. main_0ff0bd5")
    parser.add_argument("--root", type=pathlib.Path, default=HERE, help="default: %(default)s")
    args = parser.parse_args()
    print(f"speechbrain_w2vbert_sv: {speechbrain_w2vbert_sv.__file__}")
    print(f"definitions: {HPARAMS}")
    # As 31a7373's expected embeddings were recorded (the test's tolerance covers
    # other thread counts).
    torch.set_num_threads(2)
    inputs = torch.load(args.root / "inputs.pt", weights_only=True)
    generation = args.root / args.subfolder
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, seed in MODELS:
            run = pathlib.Path(tmp) / name
            _random_run(run, text, seed)
            out = export_model(run, generation / name, threshold=0.35)
            with torch.no_grad():
                embeddings = load_model(out).encode_batch(inputs["wavs"], inputs["lens"])
            torch.save(embeddings, out / "expected_embeddings.pt")
            print(f"{out}: embeddings {tuple(embeddings.shape)}")


if __name__ == "__main__":
    main()
