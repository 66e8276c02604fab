"""Importers: turn crosscoders trained with other libraries into CrossDiff crosscoders with identical outputs."""

from crossdiff_core.hub.importers.dictionary_learning import import_dictionary_learning, source_latent_order

__all__ = ["import_dictionary_learning", "source_latent_order"]
