"""Full-size parity of an imported WeSpeaker checkpoint with the peers' own code, and the
import's time and peak memory.

The w2v-BERT 2.0 architecture (``Wav2Vec2BertConfig()``, 580.5 M parameters) and
WeSpeaker's ``W2VBert_Adapter_MFA`` head (25 adapters 1024 -> 128, pooling 3200 -> 128,
embedding 256) with random weights and random pooling statistics, saved as WeSpeaker's
``avg_model.pt`` + ``config.yaml`` (no download). Real speech from ``../shared/data``
(one speaker's Arabic Speech Commands clips joined into 3 s and 20 s) goes through

- the reference path: HF ``SeamlessM4TFeatureExtractor`` (one utterance, as the peers run
  inference), HF ``Wav2Vec2BertModel`` with all hidden states, WeSpeaker's head code
  (``wespeaker-unofficial``);
- ours: ``w2vbert-sv import --format wespeaker`` run in a fresh process (its wall time and
  peak RSS are measured there: ``VmHWM`` of that process, Python and torch included;
  not ``ru_maxrss``, which a child inherits from its parent),
  then ``load_model`` of the imported folder and ``encode_batch``.

fp32, ``torch.set_num_threads(2)``; one process holds one full-size model at a time. The
lengths give an even number of fbank frames (WeSpeaker pools a half-padded frame on odd
ones, see the README).

How to measure on shared machines: ``../shared/BENCHMARKING.md``.

Run from the repository root (about 3-6 GB, a few minutes)::

    python benchmarks/interop.py

The last line: ``max_abs_diff`` (largest embedding difference over both lengths),
``cosine_min`` (smallest cosine between ours and the reference), ``import_s``,
``import_peak_rss_gb`` (GB = 1e9 bytes), ``checkpoint_gb`` (the avg_model.pt size) and
``import_peak_rss_ratio`` (the peak over the checkpoint's size).
"""

import argparse
import gc
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import (  # noqa: E402
    SeamlessM4TFeatureExtractor,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
)

from speechbrain_w2vbert_sv.data.audio import load_audio  # noqa: E402
from tests.wespeaker_peer import wespeaker_modules  # noqa: E402

LENGTHS = (3, 20)
SAMPLE_RATE = 16000


def speech(data, seconds):
    """One speaker's clips joined to ``seconds`` of audio, trimmed to even fbank frames."""
    folder = data / "arabic_speech_commands" / "dataset"
    files = sorted(folder.glob("*/*.flac"))
    speaker = files[0].name[:8]
    clips = [f for f in files if f.name.startswith(speaker)]
    wav = torch.cat([load_audio(str(f), SAMPLE_RATE) for f in clips[: seconds + 1]])
    samples = seconds * SAMPLE_RATE
    frames = 1 + (samples - 400) // 160
    if frames % 2:
        samples -= 160
    return wav[:samples]


def build_source(folder):
    """Random full-size encoder and WeSpeaker head, saved as WeSpeaker's model folder."""
    peer = wespeaker_modules()
    torch.manual_seed(0)
    config = Wav2Vec2BertConfig(layerdrop=0.0)
    encoder = Wav2Vec2BertModel(config).eval()
    del encoder.masked_spec_embed
    head = peer.mfa.W2VBert_Adapter_MFA(
        feat_dim=config.hidden_size,
        embed_dim=256,
        adapter_dim=128,
        num_frontend_hidden_layers=config.num_hidden_layers,
    ).eval()
    with torch.no_grad():
        head.pooling.attention[2].running_mean.normal_(0.0, 0.1)
        head.pooling.attention[2].running_var.uniform_(0.5, 2.0)
    state = {f"frontend.encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update(head.state_dict())
    torch.save(state, folder / "avg_model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": "W2VBert_Adapter_MFA"}))
    return encoder, head


def reference_embeddings(encoder, head, clips):
    extractor = SeamlessM4TFeatureExtractor()
    out = []
    with torch.no_grad():
        for wav in clips:
            feats = extractor(wav.numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt")
            hidden = encoder(
                feats.input_features, attention_mask=feats.attention_mask, output_hidden_states=True
            ).hidden_states
            out.append(head(hidden)[1][0])
    return out


def import_worker(source, output):
    """Run in a fresh process: the import, its wall time and peak RSS as JSON."""
    from speechbrain_w2vbert_sv.inference.checkpoint_import import import_checkpoint

    start = time.perf_counter()
    import_checkpoint(source, "wespeaker", output)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # ru_maxrss survives fork and exec: a child starts with its parent's peak (here the
    # reference model's). VmHWM is this process's own peak, where Linux has it.
    status = pathlib.Path("/proc/self/status")
    if status.is_file():
        hwm = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        peak = int(hwm.group(1)) * 1024 if hwm else peak
    print(json.dumps({"import_s": seconds, "peak_rss": peak}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        import_worker(*args.worker)
        return

    clips = [speech(pathlib.Path(args.data), s) for s in LENGTHS]
    with tempfile.TemporaryDirectory() as tmp:
        source, output = pathlib.Path(tmp) / "wespeaker", pathlib.Path(tmp) / "imported"
        source.mkdir()
        encoder, head = build_source(source)
        expected = reference_embeddings(encoder, head, clips)
        del encoder, head
        gc.collect()

        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--worker",
                str(source),
                str(output),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        measured = json.loads(run.stdout.strip().splitlines()[-1])
        checkpoint_gb = (source / "avg_model.pt").stat().st_size / 1e9

        from speechbrain_w2vbert_sv.inference.interface import load_model

        model = load_model(output)
        diffs, cosines = [], []
        for seconds, wav, reference in zip(LENGTHS, clips, expected):
            got = model.encode_batch(wav[None])[0, 0]
            diff = float((got - reference).abs().max())
            cosine = float(torch.nn.functional.cosine_similarity(got, reference, dim=0))
            diffs.append(diff)
            cosines.append(cosine)
            print(
                f"{seconds} s: max_abs_diff={diff:.3g} cosine={cosine:.8f} "
                f"reference_norm={float(reference.norm()):.3g}"
            )
    ratio = measured["peak_rss"] / 1e9 / checkpoint_gb
    print(
        f"import: {measured['import_s']:.1f} s, peak RSS {measured['peak_rss'] / 1e9:.2f} GB "
        f"for a {checkpoint_gb:.2f} GB checkpoint ({ratio:.2f}x its size)"
    )
    print(
        f"max_abs_diff={max(diffs):.3g} cosine_min={min(cosines):.8f} "
        f"import_s={measured['import_s']:.1f} "
        f"import_peak_rss_gb={measured['peak_rss'] / 1e9:.2f} checkpoint_gb={checkpoint_gb:.2f} "
        f"import_peak_rss_ratio={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
