"""The host loads what an estimate needs soon after it starts, so that the popup's first
estimate does not wait for seconds of imports."""

from __future__ import annotations

from host_client import HostClient
from polling import wait_for

ESTIMATE_LIBRARIES = {"trafilatura", "genai_prices"}


def test_host_loads_the_estimate_libraries_once_its_first_requests_are_answered(he_home):
    with HostClient(he_home, extra_env={"HYBRID_ENGINE_WARM_AFTER_S": "0"}) as host:
        assert host.call("hello", protocol=1)["heavy_modules_loaded"] == []
        loaded = wait_for(lambda: ESTIMATE_LIBRARIES <= set(host.call("host.status")["heavy_modules_loaded"]),
                          60, 0.1, "the estimate's libraries to be loaded")
        assert loaded


def test_host_leaves_the_estimate_libraries_alone_when_told_off(he_home):
    with HostClient(he_home, extra_env={"HYBRID_ENGINE_WARM_AFTER_S": "off"}) as host:
        host.call("hello", protocol=1)
        assert host.call("runs.list")["runs"] == []
        assert not ESTIMATE_LIBRARIES & set(host.call("host.status")["heavy_modules_loaded"])
