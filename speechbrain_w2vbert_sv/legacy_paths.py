"""Module paths of earlier versions, resolved on use for the folders they exported.

An exported ``hyperparams.yaml`` names classes by dotted path (for example
``speechbrain_w2vbert_sv.heads.MFAHead`` or
``speechbrain_w2vbert_sv.backbones.conformer.ConformerFbank``). Since the package was
split into ``lobes/``, ``training/``, ``scoring/`` and ``inference/``, each old module
path stands for a module that serves the names of its new homes, without copies of the
code.

Nothing is installed when the package is imported. HyperPyYAML resolves a dotted path
with ``pydoc.locate``, which looks a name up as an attribute where it cannot import it;
the package's ``__getattr__`` hands such a lookup of an old top-level name to
:func:`legacy_module`. So an old folder loads through SpeechBrain's stock
``EncoderClassifier.from_hparams`` as through ``load_model``, and the aliasing runs only
when an old path is named. Old code that imports these paths as modules
(``from speechbrain_w2vbert_sv.heads import MFAHead``) calls :func:`install` first.

Example
-------
>>> import pydoc
>>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
>>> pydoc.locate("speechbrain_w2vbert_sv.heads.MFAHead") is MFAHead
True
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

_PACKAGE = __name__.rpartition(".")[0]

# Old module (relative to the package) -> the modules its names now live in.
LEGACY_MODULES = {
    "frontend": ("lobes.w2vbert_frontend",),
    "backbones": (),
    "backbones.w2vbert": ("lobes.w2vbert_backbone",),
    "backbones.conformer": (
        "lobes.conformer_frontend",
        "lobes.conformer_backbone",
        "lobes.asr_conformer",
        "lobes.asr_checkpoint",
    ),
    "attention": ("lobes.attention",),
    "heads": ("lobes.heads",),
    "embedding_model": ("lobes.embedding_model",),
    "losses": ("lobes.losses",),
    "speaker_adaptor": ("lobes.speaker_adaptor", "inference.interface"),
    "brain": ("training.speaker_brain", "training.schedules", "training.checkpoints"),
    "distillation": ("training.asr_distillation",),
    "distillation_pruning": ("pruning.distillation",),
    "metrics": ("scoring.metrics",),
    "plots": ("scoring.plots",),
    "onnx_export": ("inference.onnx",),
    "extraction": ("inference.extraction",),
    "verification": ("inference.verification",),
    "audio": ("data.audio",),
    "data.corpus": ("data.csv_io", "data.file_checks", "data.preparation"),
    "pruning.pruned_model": ("lobes.pruned_w2vbert",),
}


class _LegacyModule(types.ModuleType):
    """A module whose attributes are looked up in the new modules, imported on use."""

    def __init__(self, name, targets):
        super().__init__(name)
        self.__path__ = []  # a package, so that `backbones.conformer` can be found below it
        self._targets = targets

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        inner = f"{self.__name__[len(_PACKAGE) + 1 :]}.{attr}"
        if inner in LEGACY_MODULES:
            return legacy_module(inner)
        for target in self._targets:
            module = importlib.import_module(f"{_PACKAGE}.{target}")
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


def legacy_module(name):
    """The module standing for an old module path (created once, then in ``sys.modules``).

    Arguments
    ---------
    name : str
        The old path relative to the package (``heads``, ``backbones.conformer``).

    Returns
    -------
    types.ModuleType

    Raises
    ------
    AttributeError
        ``name`` is no old module path (what a failed attribute lookup raises).

    Example
    -------
    >>> legacy_module("backbones").conformer.ConformerFbank.__module__
    'speechbrain_w2vbert_sv.lobes.conformer_frontend'
    """
    if name not in LEGACY_MODULES:
        raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}")
    full = f"{_PACKAGE}.{name}"
    if full not in sys.modules:
        sys.modules[full] = _LegacyModule(full, LEGACY_MODULES[name])
    return sys.modules[full]


class _LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of :data:`LEGACY_MODULES`."""

    def find_spec(self, fullname, path=None, target=None):
        """A spec for an old module path, None for any other."""
        prefix = _PACKAGE + "."
        if fullname.startswith(prefix) and fullname[len(prefix) :] in LEGACY_MODULES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        """The module that serves the old path's names."""
        return _LegacyModule(spec.name, LEGACY_MODULES[spec.name[len(_PACKAGE) + 1 :]])

    def exec_module(self, module):
        """Nothing to run: names are looked up on use."""


def install():
    """Makes the old module paths importable with ``import`` statements (once), for old
    code; loading an old folder needs no call.

    Example
    -------
    >>> install()
    >>> from speechbrain_w2vbert_sv.losses import AAMSoftmaxLoss
    >>> AAMSoftmaxLoss.__module__
    'speechbrain_w2vbert_sv.lobes.losses'
    """
    if not any(isinstance(finder, _LegacyFinder) for finder in sys.meta_path):
        sys.meta_path.append(_LegacyFinder())
