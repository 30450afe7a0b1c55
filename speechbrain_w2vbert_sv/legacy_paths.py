"""Module paths of earlier versions, kept importable for the folders they exported.

An exported ``hyperparams.yaml`` names classes by dotted path (for example
``speechbrain_w2vbert_sv.heads.MFAHead`` or
``speechbrain_w2vbert_sv.backbones.conformer.ConformerFbank``). Since the package was
split into ``lobes/``, ``training/``, ``scoring/`` and ``inference/``, each old module
path resolves to a module that serves the names of its new homes, so such folders keep
loading (and old imports keep working) without copies of the code.

Example
-------
>>> import importlib
>>> from speechbrain_w2vbert_sv.lobes.heads import MFAHead
>>> importlib.import_module("speechbrain_w2vbert_sv.heads").MFAHead is MFAHead
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
}


class _LegacyModule(types.ModuleType):
    """A module whose attributes are looked up in the new modules, imported on use."""

    def __init__(self, name, targets):
        super().__init__(name)
        self.__path__ = []  # a package, so that `backbones.conformer` can be found below it
        self._targets = targets

    def __getattr__(self, attr):
        for target in self._targets:
            module = importlib.import_module(f"{_PACKAGE}.{target}")
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


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
    """Makes the old module paths importable (once; the package does it on import)."""
    if not any(isinstance(finder, _LegacyFinder) for finder in sys.meta_path):
        sys.meta_path.append(_LegacyFinder())
