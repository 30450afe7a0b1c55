"""Command line: ``w2vbert-sv <command>`` (or ``python -m speechbrain_w2vbert_sv.cli``).

Commands:

- ``embed``: embeddings of audio files (given, or listed in a text/CSV file) into a
  ``.pt`` (``{"ids", "paths", "embeddings"}``) or ``.npz`` (``ids``, ``embeddings``), or an
  embedding store folder (an ``--output`` without suffix or with a final ``/``).
- ``verify``: score and decision for two audio files.
- ``score``: a whole trial list: scores, EER/minDCF table, plots (optionally with
  mean subtraction, adaptive s-norm and QMF calibration).
- ``export``: a training run to a folder that ``from_hparams`` loads offline
  (``--format wespeaker``: to WeSpeaker's ``config.yaml`` + ``avg_model.pt``).
- ``import``: a released checkpoint of the paper's code or WeSpeaker to such a folder.
- ``onnx``: a model to ONNX (fbank features in, or waveforms in with ``--waveform``;
  int8 with ``--int8``).
- ``quantize``: an exported folder to an int8 folder (dynamic quantization).
- ``diarize``: who spoke when: one RTTM per audio file (Silero VAD or given speech
  regions, windows embedded, spectral or agglomerative clustering).
- ``der``: diarization error rate and Jaccard error rate of RTTM files (pyannote.metrics).
- ``enroll``: speakers into a speaker store (the mean of each one's normalised embeddings,
  and the model's identity), or out of it.
- ``identify``: the enrolled speaker of each file, or ``unknown`` below the threshold.

``--model`` takes an exported folder, a training output/checkpoint folder, or (for
``embed``, ``verify``, ``score``, ``diarize``, ``enroll`` and ``identify``) an ONNX file.

Example
-------
>>> main(["verify", "--help"])
Traceback (most recent call last):
...
SystemExit: 0
"""

import argparse
import logging
import os
import sys

import yaml

# torch, speechbrain and the model code are imported inside the commands, so that
# `--help` and argument errors answer at once.


def _add_model_options(parser):
    parser.add_argument(
        "--model",
        required=True,
        help="exported model folder, training output folder, checkpoint folder or .onnx file",
    )
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: best available)")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="autocast precision of the model (bf16 on GPUs that support it); int8: "
        "dynamic quantization of the linear layers (CPU)",
    )
    parser.add_argument(
        "--no_memory_efficient_attention",
        action="store_true",
        help="use HF's attention (needs O(T^2 x head size) memory per layer)",
    )


def _add_batch_options(parser):
    parser.add_argument(
        "--batch_seconds", type=float, default=200.0, help="padded audio per batch, in seconds"
    )
    parser.add_argument("--max_batch_size", type=int, default=64)
    parser.add_argument(
        "--max_padding",
        type=float,
        default=0.2,
        help="largest padded fraction of a batch's longest file",
    )
    parser.add_argument("--num_workers", type=int, default=0, help="processes reading audio")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")


def _run_opts(args):
    from speechbrain_w2vbert_sv.utils import check_device

    check_device(args.device)
    # int8 is not an autocast precision: the model is quantized after loading.
    run_opts = {"precision": "fp32" if args.precision == "int8" else args.precision}
    if args.device is not None:
        run_opts["device"] = args.device
    return run_opts


def _load(args):
    from speechbrain_w2vbert_sv.inference.interface import load_model

    model = load_model(
        args.model,
        run_opts=_run_opts(args),
        memory_efficient_attention=not args.no_memory_efficient_attention,
    )
    if args.precision == "int8":
        from speechbrain_w2vbert_sv.inference.quantization import quantize_dynamic_int8

        if str(args.model).endswith(".onnx"):
            raise ValueError(
                f"{args.model}: --precision int8 applies to torch models; "
                "export an int8 ONNX file with `w2vbert-sv onnx --int8`"
            )
        if model.device != "cpu":
            raise ValueError("--precision int8 runs on the CPU: add --device cpu")
        model.mods.embedding_model = quantize_dynamic_int8(model.mods.embedding_model)
    return model


def _batch_kwargs(args):
    return {
        "batch_seconds": args.batch_seconds,
        "max_batch_size": args.max_batch_size,
        "max_padding": args.max_padding,
        "num_workers": args.num_workers,
        "progress": not args.no_progress,
    }


def _embeddings_output_kind(output):
    """``pt`` or ``npz`` (a file), or ``store``: a path ending in ``/`` or without a
    suffix is an embedding store folder (``data/embedding_store.py``)."""
    if output.endswith(("/", os.sep)) or not os.path.splitext(output)[1]:
        return "store"
    if output.endswith((".pt", ".npz")):
        return output.rsplit(".", 1)[1]
    raise ValueError(
        f"--output must end in .pt or .npz, or name a folder (no suffix, or a final /) "
        f"for an embedding store, got {output}"
    )


def embed(args):
    """``embed``: writes the embeddings of files to a .pt or .npz file or a store folder."""
    from speechbrain_w2vbert_sv.data.csv_io import read_file_list
    from speechbrain_w2vbert_sv.inference import distributed_extraction as extraction

    output_kind = _embeddings_output_kind(args.output)
    ids = []
    for item in args.inputs:
        is_list = item.endswith((".txt", ".csv", ".lst"))
        ids.extend(read_file_list(item) if is_list else [item])
    ids = list(dict.fromkeys(ids))
    paths = [os.path.join(args.data_folder or "", i) for i in ids]
    # Under torchrun every rank embeds its share of the list (resumable parts).
    ranks = extraction.join_torchrun(args.device)
    args.device = ranks.device
    batching = _batch_kwargs(args)
    size = extraction.extract_list(
        ids,
        paths,
        args.output,
        output_kind,
        lambda: _load(args),
        ranks,
        identity={"model": os.path.abspath(args.model), "precision": args.precision},
        meta={"model": str(args.model), "data_folder": os.path.abspath(args.data_folder or ".")},
        part_files=args.part_files,
        **batching,
    )
    if ranks.rank == 0:
        print(f"{len(ids)} embeddings of size {size} written to {args.output}")


def verify(args):
    """``verify``: prints the cosine score and decision of two files."""
    model = _load(args)
    score, decision = model.verify_files(args.file1, args.file2, threshold=args.threshold)
    threshold = model.hparams.threshold if args.threshold is None else args.threshold
    verdict = "same speaker" if bool(decision) else "different speakers"
    print(f"score={float(score):.4f} threshold={threshold:.4f} decision={verdict}")


def score(args):
    """``score``: scores a trial list and prints the results table."""
    from speechbrain_w2vbert_sv.inference.verification import (
        VerificationOptions,
        verify_trial_list,
    )
    from speechbrain_w2vbert_sv.scoring.results import format_results_table

    batching = _batch_kwargs(args)
    progress = batching.pop("progress")
    options = VerificationOptions(
        enrollment_map=args.enrollment_map,
        mean_list=args.mean_list,
        cohort_list=args.cohort_list,
        cohort_per_speaker=args.cohort_per_speaker,
        cohort_top_n=args.cohort_top_n,
        calibration_trials=args.calibration_trials,
        embeddings=args.embeddings,
        make_plots=not args.no_plots,
        memory_efficient_attention=not args.no_memory_efficient_attention,
        **batching,
    )
    results = verify_trial_list(
        args.model,
        args.trials,
        args.data_folder,
        args.output_folder,
        options,
        progress=progress,
        run_opts=_run_opts(args),
    )
    print(format_results_table(results))
    print(f"scores, results.md, results.json and plots in {args.output_folder}")


def _override(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, yaml.safe_load(value)


def export(args):
    """``export``: writes an exported model folder from a training run, or WeSpeaker's
    ``config.yaml`` + ``avg_model.pt`` from a run or an exported folder."""
    if args.format == "wespeaker":
        from speechbrain_w2vbert_sv.inference.wespeaker_export import export_wespeaker

        out = export_wespeaker(args.run, args.output, w2vbert_source=args.w2vbert_source)
        print(f"exported {args.run} to {out} in WeSpeaker's format")
        return
    from speechbrain_w2vbert_sv.inference.export import export_model

    out = export_model(
        args.run,
        args.output,
        hparams_file=args.hparams,
        overrides=dict(args.override),
        threshold=args.threshold,
        check=not args.no_check,
    )
    print(f"exported {args.run} to {out}")


def import_(args):
    """``import``: a released checkpoint (paper code or WeSpeaker) to an exported folder."""
    from speechbrain_w2vbert_sv.inference.checkpoint_import import import_checkpoint

    out = import_checkpoint(
        args.checkpoint,
        args.format,
        args.output,
        w2vbert_source=args.w2vbert_source,
        config=args.config,
        threshold=args.threshold,
    )
    notes = [
        line[2:]
        for line in (out / "hyperparams.yaml").read_text().splitlines()[1:]
        if line.startswith("# ")
    ]
    print("\n".join(notes + [f"imported {args.checkpoint} to {out}"]))


def onnx(args):
    """``onnx``: exports a model to an ONNX file."""
    from speechbrain_w2vbert_sv.inference.interface import SpeechBrainSpeakerRecognition
    from speechbrain_w2vbert_sv.inference.onnx import export_onnx

    if not args.output.endswith(".onnx"):
        raise ValueError(f"--output must end in .onnx, got {args.output}")
    if args.precision == "int8":
        raise ValueError("export the float model with --int8 (ONNX Runtime quantization)")
    model = _load(args)
    if isinstance(model, SpeechBrainSpeakerRecognition):
        raise ValueError(
            f"{args.model}: a SpeechBrain speaker folder; ONNX export takes this package's "
            "models (exported folders, training runs)"
        )
    export_onnx(
        model.mods.embedding_model.cpu(),
        args.output,
        waveform=args.waveform,
        int8=args.int8,
        threshold=model.hparams.threshold,
    )
    inputs = "(wavs [B, S], wav_lens [B])" if args.waveform else "(feats [B, T, F], feat_lens [B])"
    print(f"wrote {args.output}: {inputs} -> embeddings [B, E]" + (", int8" if args.int8 else ""))


def quantize(args):
    """``quantize``: writes an int8 copy of an exported model folder."""
    from speechbrain_w2vbert_sv.inference.quantization import export_int8

    out = export_int8(args.model, args.output, pointwise_conv=not args.no_pointwise_conv)
    print(f"wrote {out}: int8 linear layers (loads like {args.model})")


def diarize(args):
    """``diarize``: writes ``<output_folder>/<file stem>.rttm`` for each audio file."""
    from speechbrain_w2vbert_sv.applications.diarization import Diarizer, diarize_files
    from speechbrain_w2vbert_sv.applications.vad import SileroVAD
    from speechbrain_w2vbert_sv.data.csv_io import read_file_list

    paths = []
    for item in args.inputs:
        is_list = item.endswith((".txt", ".csv", ".lst"))
        paths.extend(read_file_list(item) if is_list else [item])
    paths = [os.path.join(args.data_folder or "", p) for p in dict.fromkeys(paths)]
    # Options left out keep the defaults of SileroVAD and Diarizer (one place for them).
    given = {k: v for k, v in vars(args).items() if v is not None}
    vad_names = {"vad_threshold": "threshold", "min_speech": "min_speech"}
    vad_names.update(min_silence="min_silence", speech_pad="speech_pad")
    vad = SileroVAD(**{vad_names[k]: given[k] for k in vad_names if k in given})
    names = ("window", "step", "mode", "clustering", "num_speakers", "min_speakers")
    names += ("max_speakers", "threshold", "batch_seconds")
    diarizer = Diarizer(_load(args), vad=vad, **{k: given[k] for k in names if k in given})
    results = diarize_files(diarizer, paths, args.output_folder, args.segments, args.overwrite)
    for recording, segments in results.items():
        if segments is None:
            print(f"{recording}: kept the RTTM of an earlier run (--overwrite to redo it)")
        else:
            speakers = len({speaker for _, _, speaker in segments})
            print(f"{recording}: {speakers} speaker(s), {len(segments)} segment(s)")
    print(f"{len(results)} RTTM file(s) in {args.output_folder}")


def der(args):
    """``der``: DER and JER of hypothesis RTTMs, per recording and in total."""
    from speechbrain_w2vbert_sv.applications.der import score_rttm

    scores, total = score_rttm(
        args.reference,
        args.hypothesis,
        collar=args.collar,
        skip_overlap=args.skip_overlap,
        uem=args.uem,
    )
    for recording_score in scores:
        print(recording_score.line())
    print(total.line())


def _model_name(args):
    return os.path.basename(os.path.normpath(args.model))


def enroll(args):
    """``enroll``: adds the files of a list to a speaker store and/or removes speakers."""
    from speechbrain_w2vbert_sv.applications import identification
    from speechbrain_w2vbert_sv.inference.verification import check_files

    if not args.list and not args.remove:
        raise ValueError("nothing to do: give --list and/or --remove")
    speakers, paths = identification.read_enrollment_list(args.list) if args.list else ([], [])
    batching = _batch_kwargs(args)
    if paths:
        batching["durations"] = check_files(
            file_lists=[(args.list, paths)], num_workers=args.num_workers
        )
    store = identification.enroll(
        _load(args), args.store, speakers, paths, args.remove, _model_name(args), **batching
    )
    print(
        f"{args.store}: {len(store)} speakers ({len(set(speakers))} enrolled from "
        f"{len(paths)} files, {len(args.remove)} removed)"
    )


def identify(args):
    """``identify``: prints ``<file> <speaker or unknown> <score>`` per file (and with
    ``--top_k`` K > 1, the K best ``speaker:score`` pairs after them)."""
    from speechbrain_w2vbert_sv.applications import identification
    from speechbrain_w2vbert_sv.data.csv_io import read_file_list
    from speechbrain_w2vbert_sv.inference.verification import check_files

    files = []
    for item in args.inputs:
        is_list = item.endswith((".txt", ".csv", ".lst"))
        files.extend(read_file_list(item) if is_list else [item])
    files = list(dict.fromkeys(files))
    batching = _batch_kwargs(args)
    batching["durations"] = check_files(
        file_lists=[("inputs", files)], num_workers=args.num_workers
    )
    results = identification.identify(
        _load(args), args.store, files, args.top_k, args.threshold, _model_name(args), **batching
    )
    for path, result in zip(files, results):
        pairs = [f"{name}:{score:.4f}" for name, score in result.candidates]
        print(" ".join([path, result.speaker, f"{result.score:.4f}"] + pairs * (args.top_k > 1)))


def build_parser():
    """The argument parser of ``w2vbert-sv`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="w2vbert-sv", description="Speaker verification with w2v-BERT 2.0 models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("embed", help="embed audio files into a .pt or .npz file")
    p.add_argument(
        "inputs",
        nargs="+",
        help="audio files, or lists of them (.txt one per line, .csv wav/file column)",
    )
    p.add_argument(
        "--output",
        required=True,
        help="embeddings file (.pt or .npz), or a folder (no suffix, or a final /) for a "
        "memory-mapped embedding store",
    )
    p.add_argument("--data_folder", default=None, help="root of relative paths")
    p.add_argument(
        "--part_files",
        type=int,
        default=1000,
        help="files per part: parts are written to <output>.parts as they are done, and a "
        "rerun (any number of torchrun processes) keeps them",
    )
    _add_model_options(p)
    _add_batch_options(p)
    p.set_defaults(func=embed)

    p = commands.add_parser("verify", help="score two audio files")
    p.add_argument("file1")
    p.add_argument("file2")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on the cosine score (default: the model's)",
    )
    _add_model_options(p)
    p.set_defaults(func=verify)

    p = commands.add_parser("score", help="score a trial list: EER, minDCF, plots")
    p.add_argument("--trials", required=True, help="trial list: 'label enroll test' per line")
    p.add_argument("--data_folder", required=True, help="root of the trial list's paths")
    p.add_argument("--output_folder", required=True)
    p.add_argument(
        "--enrollment_map",
        default=None,
        help="'model utt1 utt2 ...' lines (CN-Celeb's enroll.map): enroll ids that are "
        "models are the mean embedding of their utterances",
    )
    p.add_argument("--mean_list", default=None, help="files whose mean embedding is subtracted")
    p.add_argument("--cohort_list", default=None, help="adaptive s-norm cohort files")
    p.add_argument(
        "--cohort_per_speaker",
        action="store_true",
        help="one cohort entry per spk_id of a CSV cohort list",
    )
    p.add_argument("--cohort_top_n", type=int, default=300)
    p.add_argument(
        "--calibration_trials", default=None, help="trial list on which QMF calibration is fitted"
    )
    p.add_argument(
        "--embeddings",
        action="append",
        default=None,
        help="embeddings computed by `embed` (store folder, read memory-mapped, or .pt/.npz; "
        "repeatable): the files they hold are not embedded again (cohort included)",
    )
    p.add_argument("--no_plots", action="store_true")
    _add_model_options(p)
    _add_batch_options(p)
    p.set_defaults(func=score)

    p = commands.add_parser("export", help="export a training run for from_hparams")
    p.add_argument(
        "--run",
        "--model",
        dest="run",
        required=True,
        help="training output folder, checkpoint folder, prune.py's pruned/ or "
        "distilled/ (with --format wespeaker also an exported folder)",
    )
    p.add_argument(
        "--format",
        default="speechbrain",
        choices=["speechbrain", "wespeaker"],
        help="speechbrain: hyperparams.yaml + embedding_model.ckpt; wespeaker: "
        "config.yaml + avg_model.pt for WeSpeaker's load_model_pt",
    )
    p.add_argument(
        "--w2vbert_source",
        default=None,
        help="wespeaker: model_name of WeSpeaker's frontend (default: "
        "facebook/w2v-bert-2.0 for its architecture, else a w2vbert/ folder "
        "written beside)",
    )
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument(
        "--hparams", default=None, help="training yaml (default: the run's hyperparams.yaml)"
    )
    p.add_argument(
        "--override",
        type=_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the training yaml (repeatable)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold to store (e.g. the EER threshold of score)",
    )
    p.add_argument(
        "--no_check",
        action="store_true",
        help="skip reloading the export and comparing its embeddings",
    )
    p.set_defaults(func=export)

    p = commands.add_parser("import", help="import a released checkpoint (paper code or WeSpeaker)")
    p.add_argument("--format", required=True, choices=["paper", "wespeaker"])
    p.add_argument(
        "--checkpoint",
        required=True,
        help="paper: the checkpoint file; wespeaker: the model folder "
        "(config.yaml + avg_model.pt) or its avg_model.pt",
    )
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument(
        "--w2vbert_source",
        default=None,
        help="hub id or folder whose config.json describes the encoder "
        "(default: w2v-BERT 2.0's configuration, sizes from the weights)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="the source's configuration: the paper's training yaml (LoRA "
        "alpha), or a WeSpeaker config.yaml other than the one beside",
    )
    p.add_argument("--threshold", type=float, default=None, help="decision threshold to store")
    p.set_defaults(func=import_)

    p = commands.add_parser("onnx", help="export a model to ONNX")
    p.add_argument("--output", required=True, help="ONNX file to write (.onnx)")
    p.add_argument(
        "--waveform",
        action="store_true",
        help="include the front end: (wavs, wav_lens) in, instead of fbank features",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantize the matrix products to int8 (ONNX Runtime dynamic quantization)",
    )
    _add_model_options(p)
    p.set_defaults(func=onnx)

    p = commands.add_parser("quantize", help="int8 copy of an exported model folder")
    p.add_argument("--model", required=True, help="exported model folder")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument(
        "--no_pointwise_conv",
        action="store_true",
        help="keep the convolution modules' pointwise convolutions in float",
    )
    p.set_defaults(func=quantize)

    p = commands.add_parser("diarize", help="who spoke when: one RTTM per audio file")
    p.add_argument(
        "inputs",
        nargs="+",
        help="audio files, or lists of them (.txt one per line, .csv wav/file column)",
    )
    p.add_argument("--output_folder", required=True, help="folder of the <file stem>.rttm files")
    p.add_argument("--data_folder", default=None, help="root of relative paths")
    p.add_argument(
        "--segments",
        default=None,
        help="RTTM or UEM (file or folder) of the speech regions, recordings named by "
        "file stem: replaces the VAD (oracle speech regions)",
    )
    p.add_argument(
        "--mode",
        choices=["shared", "windows"],
        default=None,
        help="shared (default): one encoder pass per speech region, each window pooled "
        "from its frames; windows: every window through the whole model",
    )
    p.add_argument("--clustering", choices=["spectral", "agglomerative"], default=None)
    p.add_argument("--num_speakers", type=int, default=None, help="known number of speakers")
    p.add_argument("--min_speakers", type=int, default=None)
    p.add_argument("--max_speakers", type=int, default=None)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine threshold: agglomerative merging, one speaker or several in "
        "spectral clustering (default: the model's)",
    )
    p.add_argument("--window", type=float, default=None, help="window length in seconds")
    p.add_argument("--step", type=float, default=None, help="hop between windows in seconds")
    p.add_argument("--vad_threshold", type=float, default=None, help="Silero speech probability")
    p.add_argument("--min_speech", type=float, default=None, help="shortest speech, seconds")
    p.add_argument("--min_silence", type=float, default=None, help="pause that ends speech")
    p.add_argument("--speech_pad", type=float, default=None, help="padding of speech regions")
    p.add_argument(
        "--batch_seconds", type=float, default=None, help="padded audio per batch, in seconds"
    )
    p.add_argument("--overwrite", action="store_true", help="redo files whose RTTM exists")
    _add_model_options(p)
    p.set_defaults(func=diarize)

    p = commands.add_parser("der", help="diarization error rate of RTTMs (pyannote.metrics)")
    p.add_argument("--reference", required=True, help="reference RTTM file or folder of them")
    p.add_argument("--hypothesis", required=True, help="hypothesis RTTM file or folder of them")
    p.add_argument(
        "--collar",
        type=float,
        default=0.25,
        help="seconds left unscored on each side of reference boundaries (md-eval's -c)",
    )
    p.add_argument(
        "--skip_overlap", action="store_true", help="leave overlapped reference speech unscored"
    )
    p.add_argument("--uem", default=None, help="UEM file (or folder) of the regions scored")
    p.set_defaults(func=der)

    p = commands.add_parser("enroll", help="add speakers to a speaker store, or remove them")
    p.add_argument("--store", required=True, help="speaker store folder (created if absent)")
    p.add_argument(
        "--list",
        default=None,
        help="'<speaker> <audio path>' lines; relative paths are relative to the list's "
        "folder; a speaker already enrolled gets the files added to its mean",
    )
    p.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="NAME",
        help="speaker to remove, before the list is added (repeatable)",
    )
    _add_model_options(p)
    _add_batch_options(p)
    p.set_defaults(func=enroll)

    p = commands.add_parser("identify", help="the enrolled speaker of each audio file")
    p.add_argument(
        "inputs",
        nargs="+",
        help="audio files, or lists of them (.txt one per line, .csv wav/file column)",
    )
    p.add_argument("--store", required=True, help="speaker store written by enroll")
    p.add_argument(
        "--top_k",
        type=int,
        default=1,
        help="K > 1: the K best speaker:score pairs follow the answer on each line",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="lowest cosine score that names a speaker, else 'unknown' (default: the model's)",
    )
    _add_model_options(p)
    _add_batch_options(p)
    p.set_defaults(func=identify)
    return parser


def main(argv=None):
    """Entry point of ``w2vbert-sv``; bad input exits with a one-line error."""
    args = build_parser().parse_args(argv)
    # Warnings only: SpeechBrain's loggers (ours too) pass INFO records on; results go to stdout.
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[handler], format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, ImportError) as error:
        sys.exit(f"w2vbert-sv {args.command}: error: {error}")


if __name__ == "__main__":
    main()
