"""Importers: turn crosscoders trained with other libraries into CrossDiff crosscoders with identical outputs."""

from crossdiff_core.hub.importers.dictionary_learning import (
    NORMALIZATION_CHOICES,
    ImportResult,
    import_dictionary_learning,
    import_with_provenance,
    source_latent_order,
)

__all__ = [
    "NORMALIZATION_CHOICES",
    "ImportResult",
    "import_dictionary_learning",
    "import_with_provenance",
    "source_latent_order",
]
