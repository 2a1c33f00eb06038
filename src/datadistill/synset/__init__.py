"""Synthetic sets: the protocol, `PixelSet`, `StepSet`, `FactorizedSet` (HaBa), file I/O and export."""

from .base import SYNSETS, SetFeatures, SyntheticSet
from .export import SynsetDataset, export_imagefolder
from .collapse import collapse_diagnostic
from .factorized import FactorizedSet, Hallucinator, HallucinatorConfig, factorized_synset
from .io import SynsetFile, SynsetFileError, load_synset, read_meta, save_synset, update_meta
from .pixel import PixelSet
from .steps import StepSet

__all__ = ["SYNSETS", "SetFeatures", "SyntheticSet", "PixelSet", "StepSet", "FactorizedSet", "Hallucinator", "HallucinatorConfig",
           "factorized_synset", "collapse_diagnostic", "SynsetDataset", "export_imagefolder", "SynsetFile",
           "SynsetFileError", "load_synset", "read_meta", "save_synset", "update_meta"]
