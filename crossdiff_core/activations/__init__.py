"""Paired activations: both models run on aligned text, their rows at paired positions, stored and batched.

- `config` — `HarvestConfig` and `OUTLIER_FACTOR`, torch-free (the CLI's parser reads them).
- `paired` — run both models up to their read layers on aligned text and keep the paired rows
  (one rule for padding and outliers, used by the harvest and by every analysis).
- `harvest` — stream a corpus through `paired` into a `store`, resumable, sharded across ranks.
- `store` — the on-disk `PairedActivationStore` (fp16 shards, running statistics, a held-out split).
- `batches` — the `BatchSource` protocol and in-memory batches that the trainer reads.
"""
