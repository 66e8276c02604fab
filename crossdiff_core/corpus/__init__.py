"""Text to harvest and index: corpus specs and their windows (`sources`), the built-in corpora
(`builtin`, `package_docs`, `demo_generated`, and `human_docs`, Debian's installed manuals read through
`dpkg`, `roff`, `html_text` and `untranslated`) and the model-organism texts (`organism_texts`).

Nothing in this package loads a model: `crossdiff_core.demo_corpus` runs the demo models to write
`data/demo_generated.jsonl`.
"""
