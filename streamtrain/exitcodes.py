"""Exit codes of every StreamTrain program, written once for both languages: the Kafka Streams
scorer's scorer/streams/src/main/java/streamtrain/scorer/ExitCodes.java has the same names and
values (tests/test_exitcodes.py holds them together and provokes each with a real failure).

An orchestrator reads them: CONFIG will fail again until someone changes the input, so a
restart loop is pointless; NO_MODEL, MODEL_WATCHER and KAFKA may pass on a restart.
"""

from __future__ import annotations

#: Done, or stopped cleanly by SIGTERM / SIGINT.
OK = 0
#: The work failed: simulate left messages unacknowledged or had devices refused, evaluate found no
#: scores, `stack status` found a broker not ready, the demo broke off.
FAILED = 1
#: Bad settings, options, preprocessing spec or credentials file, or missing topics that could not be
#: created; nothing was processed. Click's own usage errors exit with the same code.
CONFIG = 2
#: Scorer: no model version arrived within --model-wait (STREAMTRAIN_MODEL_WAIT_S).
NO_MODEL = 3
#: Scorer: the model watcher failed (or the Kafka Streams topology did).
MODEL_WATCHER = 4
#: A fatal Kafka error, e.g. a transactional producer fenced by another replica with the same instance id.
KAFKA = 5
