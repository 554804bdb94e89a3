"""The StreamTrain operator: a StreamingTraining resource in, the whole pipeline's children out.

Rendering (``render``) is pure; ``handlers`` is the thin kopf layer on top.
"""

GROUP = "streamtrain.io"
VERSION = "v1alpha1"
PLURAL = "streamingtrainings"
KIND = "StreamingTraining"
