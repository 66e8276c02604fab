"""Training crosscoders on paired activations: configuration, losses, the loop and its checkpoints."""
