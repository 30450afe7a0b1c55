"""Small helpers shared across the package: padding masks, parameter counts, reading
checkpoint and YAML files."""

import os
import pathlib
import pickle
import re
import zipfile

import torch
import yaml


def fsync_path(path):
    """Flushes a file or folder to disk (a folder: its entries, after a rename).

    Arguments
    ---------
    path : str or os.PathLike
        File or folder.

    Example
    -------
    >>> fsync_path(getfixture("tmp_path"))
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lengths_to_mask(lengths, max_len):
    """Boolean mask of valid frames from relative lengths.

    Arguments
    ---------
    lengths : torch.Tensor
        Relative lengths [B] in (0, 1], as SpeechBrain uses them.
    max_len : int
        Number of frames of the padded batch.

    Returns
    -------
    torch.Tensor
        Boolean mask [B, max_len], True on valid frames.

    Example
    -------
    >>> lengths_to_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    # round() rather than floor(): relative lengths are ratios that float error may push
    # just below an integer number of frames.
    abs_lengths = torch.round(lengths.to(torch.float64) * max_len).clamp(min=1)
    frames = torch.arange(max_len, device=lengths.device)
    return frames[None, :] < abs_lengths.to(frames.device)[:, None]


def recipe_lengths(lengths, batch, device=None):
    """Relative lengths as SpeechBrain's recipe scripts pass them to a module.

    None means every utterance fills the batch. SpeechBrain's
    ``extract_speaker_embeddings.py`` passes the absolute sample count of a batch
    of one (``torch.Tensor([data.shape[1]])``): a batch of one is full length, so
    such a count reads as 1.0. Above 1 in a larger batch is ambiguous: an error.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[batch]`` relative lengths in (0, 1], or as described above.
    batch : int
        Batch size of the tensor the lengths describe.
    device : torch.device, optional
        Device of the returned tensor (default: that of ``lengths``).

    Returns
    -------
    torch.Tensor
        ``[batch]`` relative lengths.

    Example
    -------
    >>> recipe_lengths(torch.tensor([16000.0]), 1)
    tensor([1.])
    >>> recipe_lengths(None, 2)
    tensor([1., 1.])
    >>> recipe_lengths(torch.tensor([1.0, 3.0]), 2)
    Traceback (most recent call last):
    ...
    ValueError: lengths must be relative, in (0, 1] ...
    """
    if lengths is None:
        return torch.ones(batch, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if bool((lengths > 1).any()):
        if batch != 1:
            raise ValueError(
                "lengths must be relative, in (0, 1] (fractions of the padded length, "
                f"as SpeechBrain's data loaders give them), got {lengths.tolist()}"
            )
        lengths = torch.ones_like(lengths, dtype=torch.float)
    return lengths


def count_parameters(module, trainable_only=False, exclude=()):
    """Number of parameters of a module.

    Arguments
    ---------
    module : torch.nn.Module
        The module.
    trainable_only : bool
        Count only parameters that require gradients.
    exclude : sequence of str
        Parameter names left out (e.g. ``masked_spec_embed``, which inference never uses).

    Returns
    -------
    int

    Example
    -------
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    >>> count_parameters(torch.nn.Linear(3, 2), exclude=("bias",))
    6
    """
    return sum(
        p.numel()
        for name, p in module.named_parameters()
        if (p.requires_grad or not trainable_only) and name not in exclude
    )


def check_device(device):
    """Raises a one-line ValueError when ``device`` names a GPU that torch cannot use.

    Arguments
    ---------
    device : str or None
        E.g. ``cpu``, ``cuda``, ``cuda:1`` (None: nothing to check).

    Example
    -------
    >>> check_device("cpu")
    """
    if device is None or not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu"
        )
    index = str(device).partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )


_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile)


def load_checkpoint_file(path):
    """Reads a ``torch.save`` file (tensors and plain containers only) on the CPU.

    Memory-mapped when the format allows (a 2.4 GB model is then not read twice).
    Nothing but tensors and plain containers is unpickled (``weights_only=True``), so
    a checkpoint from elsewhere cannot run code when read; SpeechBrain's own files
    (state dicts, ``InputNormalization``'s ``normalizer.ckpt``) need no other type.

    Arguments
    ---------
    path : str or os.PathLike
        The file.

    Returns
    -------
    object
        What ``torch.save`` stored.

    Raises
    ------
    ValueError
        One line naming the file: missing, not a PyTorch checkpoint, truncated or
        damaged, or holding objects other than tensors and plain containers.

    Example
    -------
    >>> bad = getfixture("tmp_path") / "model.ckpt"
    >>> _ = bad.write_text("hello")
    >>> load_checkpoint_file(bad)
    Traceback (most recent call last):
    ...
    ValueError: ...model.ckpt: not a PyTorch checkpoint (neither torch.save's zip archive ...
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        start = f.read(4)
    # torch.save writes a zip archive (b"PK..."), or a pickle (protocol byte 0x80).
    if not start.startswith((b"PK", b"\x80")):
        raise ValueError(
            f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor its "
            "legacy pickle format)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, *_LOAD_ERRORS):
        pass  # damaged, or a format that cannot be mapped: the plain reader tells
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the refused global ("GLOBAL posix.system"): the one useful detail.
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = found.group(1) if found else str(error).strip().split(". ")[0]
        raise ValueError(
            f"{path}: holds objects other than tensors and plain containers ({what}), "
            "which are not loaded: unpickling them could run code"
        ) from None
    except _LOAD_ERRORS as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint, truncated or damaged ({reason}): "
            "copy, download or export it again"
        ) from None


class _TagIgnoringLoader(yaml.SafeLoader):
    """Reads HyperPyYAML (``!new:``, ``!apply:``, ``!ref``...) as plain YAML values."""


def _untagged(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_TagIgnoringLoader.add_multi_constructor("!", _untagged)


def read_yaml(path):
    """A YAML or HyperPyYAML file as plain values (tags ignored, nothing built).

    Arguments
    ---------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        One line naming the file: missing, not YAML, or not a mapping.

    Example
    -------
    >>> path = getfixture("tmp_path") / "hyperparams.yaml"
    >>> _ = path.write_text("model: !new:torch.nn.Linear\\n    in_features: 2\\n")
    >>> read_yaml(path)
    {'model': {'in_features': 2}}
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagIgnoringLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a YAML file ({str(error).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return tree
