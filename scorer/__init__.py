"""The live scorer program and the quality evaluation of its output."""
