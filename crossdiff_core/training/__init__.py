"""Training crosscoders on paired activations. One module per job, each importing only those above it:

- `config`: `TrainConfig` (its validation and the automatic `dead_after_tokens` rule), `TrainProgress`, `TrainResult`
- `losses`: the loss of one step (BatchTopK with auxk, or L1) and its statistics (`training_loss`, `StepOutput`)
- `relocation`: moving one-model shared latents into dead exclusive latents (`relocate_one_sided`)
- `normalization`: normalization scales, pair metadata and decoder biases from the activations (`fit_to_source`)
- `checkpoint`: saving, loading and resuming checkpoints; `metrics.jsonl` and the `training.json` summary
- `out_of_memory`: the advice an out-of-memory failure during training gives
- `loop`: `train()`, the learning-rate schedule and the logged metrics

Import each name from the module that defines it (`from crossdiff_core.training.loop import train`).
"""
