"""Whether lava-nc is importable, and the skip mark for tests that need it.

With MSTPN_REQUIRE_ALL_BACKENDS=1 (set by .ci/run) a missing lava is an error, not a skip."""
import os

import pytest

import lava_procs
from mstpn_base.errors import BackendUnavailableError

try:
    lava_procs.require_lava()
    HAVE_LAVA = True
except BackendUnavailableError:
    if os.environ.get("MSTPN_REQUIRE_ALL_BACKENDS") == "1":
        raise
    HAVE_LAVA = False
needs_lava = pytest.mark.skipif(not HAVE_LAVA, reason="lava-nc not installed")
