"""EER of the deployable forms of a trained model and of its pruned version.

For a trained model (a training output folder) and its pruned, distilled version
(``prune.py``'s ``distilled/`` folder), the same trial list is scored with eight
forms: torch fp32, torch int8 (``quantize_dynamic_int8``), ONNX Runtime fp32 and int8
(waveform-in graphs of ``export_onnx``), for the full and the pruned model. Each
form embeds every file of the list once (``encode_files``), trials are cosine
scores, no normalisation.

Run from the repository root after the small pruning check of
``recipes/VoxCeleb/README.md`` (paths as there)::

    python recipes/VoxCeleb/deploy_quality.py --teacher asc/teacher --pruned asc/prune/distilled \\
        --data_folder ../shared/data/arabic_speech_commands \\
        --trials ../shared/data/arabic_speech_commands/trials/val_speakers_text_independent.txt \\
        --work asc/deploy

The last line holds ``name=value`` pairs: ``eer_<form>`` (percent), ``<form>_loss``
(points of EER above the fp32 torch model of the same size), ``pruning_loss`` (pruned
fp32 above full fp32) and ``pruned_int8_total_loss`` (pruned int8 above full fp32).
"""

import argparse
import pathlib
import sys
import time

import ruamel.yaml
import torch

try:
    import speechbrain_w2vbert_sv  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from speechbrain_w2vbert_sv.inference import (  # noqa: E402
    export_model,
    find_checkpoint,
    load_model,
)
from speechbrain_w2vbert_sv.inference.model_yaml import HPARAMS_FILE  # noqa: E402
from speechbrain_w2vbert_sv.inference.onnx import export_onnx  # noqa: E402
from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8  # noqa: E402
from speechbrain_w2vbert_sv.scoring import cosine_scores, read_trials  # noqa: E402
from speechbrain_w2vbert_sv.scoring.metrics import compute_eer  # noqa: E402


def pruned_hparams(teacher, pruned, out):
    """The teacher's training yaml with the pruned encoder as the model's source."""
    yaml = ruamel.yaml.YAML()
    tree = yaml.load((pathlib.Path(teacher) / HPARAMS_FILE).read_text(encoding="utf-8"))
    tree["model"]["w2vbert_source"] = str(pathlib.Path(pruned) / "encoder")
    tree["model"]["w2vbert_config"] = {}
    with open(out, "w", encoding="utf-8") as f:
        yaml.dump(tree, f)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="training output folder")
    parser.add_argument("--pruned", required=True, help="prune.py's distilled/ folder")
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--trials", required=True)
    parser.add_argument("--work", required=True, help="folder for the exported models")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    folders = {
        "full": export_model(args.teacher, work / "full"),
        "pruned": export_model(
            find_checkpoint(args.pruned),
            work / "pruned",
            hparams_file=pruned_hparams(args.teacher, args.pruned, work / "pruned_train.yaml"),
        ),
    }
    trials = read_trials(args.trials)
    paths = trials.paths(args.data_folder)
    results = {}
    print(f"{len(trials)} trials, {len(paths)} files, {args.threads} thread(s)")
    print("form | EER % | loss vs fp32 torch (points) | seconds to embed")
    for size, folder in folders.items():
        model = load_model(folder, run_opts={"device": "cpu"})
        float_model = model.mods.embedding_model
        forms = {
            "fp32": lambda: float_model,
            "int8": lambda: quantize_dynamic_int8(float_model),
            "onnx_fp32": lambda: onnx_model(float_model, work / f"{size}.onnx", False),
            "onnx_int8": lambda: onnx_model(float_model, work / f"{size}_int8.onnx", True),
        }
        for form, build in forms.items():
            model.mods.embedding_model = build()
            start = time.perf_counter()
            embeddings = model.encode_files(paths, progress=False)
            seconds = time.perf_counter() - start
            scores = cosine_scores(trials, embeddings.numpy(), ids=trials.utterances)
            name = form if size == "full" else f"pruned_{form}"
            eer = 100 * compute_eer(scores, trials.labels)
            results[name] = eer
            base = results["fp32" if size == "full" else "pruned_fp32"]
            print(f"{name:15s} | {eer:6.2f} | {eer - base:+.2f} | {seconds:.1f}", flush=True)
    pairs = {f"eer_{k}": v for k, v in results.items()}
    for name, eer in results.items():
        if name not in ("fp32", "pruned_fp32"):
            pairs[f"{name}_loss"] = eer - results["pruned_fp32" if "pruned" in name else "fp32"]
    # The pruning step itself, and pruning and int8 together.
    pairs["pruning_loss"] = results["pruned_fp32"] - results["fp32"]
    pairs["pruned_int8_total_loss"] = results["pruned_int8"] - results["fp32"]
    print(" ".join(f"{k}={v:.2f}" for k, v in pairs.items()))


def onnx_model(float_model, path, int8):
    from speechbrain_w2vbert_sv.inference.onnx import ONNXEmbeddingModel

    export_onnx(float_model, path, waveform=True, int8=int8)
    return ONNXEmbeddingModel(path, num_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
