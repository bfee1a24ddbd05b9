"""The run side: the CLI, the training loop and what it needs (config checks, checkpoints, launchers)."""
