"""Every test that uses brokers carries a marker, so `make test-unit` never starts one."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

#: The inner runs have no pyproject.toml of ours: its asyncio setting is passed on.
QUIET = ("-o", "asyncio_default_fixture_loop_scope=function")
CONFTEST = (REPO / "tests" / "conftest.py").read_text()


def test_a_test_using_the_brokers_without_a_marker_stops_the_run(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_unmarked="def test_reads_kafka(local_stack):\n    pass\n",
        test_marked="import pytest\n\n@pytest.mark.e2e\ndef test_reads_kafka(local_stack):\n    pass\n",
    )
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *QUIET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*1 test(s) use the brokers*test_unmarked.py::test_reads_kafka*"])


def test_an_unmarked_test_that_starts_brokers_itself_fails_before_they_start(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_own_stack=(
            "from streamtrain.settings import StackSettings\n"
            "from streamtrain.stack.local import LocalStack\n\n"
            "def test_own(tmp_path):\n"
            "    LocalStack(StackSettings(home=tmp_path)).up()\n"
        )
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", *QUIET)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*starts brokers without one of the markers e2e*"])
