"""The `streamtrain` command: one entry point that dispatches to the programs."""
