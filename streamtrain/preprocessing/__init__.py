"""Declarative stream preprocessing: one spec, rendered as ksqlDB statements for a cluster
or executed by the embedded engine locally."""

from streamtrain.preprocessing.spec import PreprocessSpec, SpecError

__all__ = ["PreprocessSpec", "SpecError"]
