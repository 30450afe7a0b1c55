"""Writes the tiny exported folders that ``test_legacy_exports.py`` loads.

They were written once by main at commit 31a7373 (before the package was split into
lobes/, training/, scoring/, inference/), so their ``hyperparams.yaml`` names the
module paths of that time. Kept for the record; rerunning it with a later version
writes folders in that version's format, which is not what the test is for.

Run from the repository root: ``python tests/data/legacy_exports/make_legacy_exports.py``
"""

import pathlib

import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

from speechbrain_w2vbert_sv.brain import AtomicCheckpointer
from speechbrain_w2vbert_sv.inference import export_model, load_model

HERE = pathlib.Path(__file__).resolve().parent
HPARAMS = HERE.parents[2] / "hparams"

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


def _random_run(folder, text, seed):
    """A training folder holding a resolved yaml and one checkpoint of random weights."""
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
    import tempfile

    gen = torch.Generator().manual_seed(123)
    wavs = 0.1 * torch.randn(2, 16000, generator=gen)
    lens = torch.tensor([1.0, 0.7])
    torch.save({"wavs": wavs, "lens": lens}, HERE / "inputs.pt")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, seed in (("w2vbert_mfa", W2VBERT, 1), ("conformer_mfa", CONFORMER, 2)):
            run = pathlib.Path(tmp) / name
            _random_run(run, text, seed)
            out = export_model(run, HERE / name, threshold=0.35)
            with torch.no_grad():
                embeddings = load_model(out).encode_batch(wavs, lens)
            torch.save(embeddings, HERE / name / "expected_embeddings.pt")


if __name__ == "__main__":
    main()
