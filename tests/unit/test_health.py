"""The per-process health endpoint (shared/metrics.py): readiness that says what is degraded."""

from shared import metrics


def test_readyz_says_what_is_degraded_while_the_process_still_serves():
    import urllib.request

    health = metrics.Health("degraded-test")
    server = metrics.serve(health, 0, "127.0.0.1")
    state = {"redis": "Redis unreachable"}
    health.degraded["redis"] = lambda: state["redis"]
    health.ready = True

    def readyz():
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()

    try:
        assert readyz() == (200, "ready, degraded: Redis unreachable\n")
        state["redis"] = None
        assert readyz() == (200, "ready\n")
    finally:
        server.shutdown()
