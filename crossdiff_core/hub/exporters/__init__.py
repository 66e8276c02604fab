"""Exporters: write CrossDiff crosscoders in other libraries' formats with identical outputs.

`dictionary_learning`: a checkpoint that dfc_learning's (and dictionary_learning's) crosscoder classes load.
"""
