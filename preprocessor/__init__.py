"""The preprocessing program: raw topic -> embedded engine -> features and windows topics."""
