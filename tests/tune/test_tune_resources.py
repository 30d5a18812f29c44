"""A local Ray started by the drivers listens on 127.0.0.1 only (tune.resources.init_ray): its node address is the
loopback one while ``ray.init`` runs, which is what makes Ray 2.60 bind its token-less Prometheus metrics endpoints
to loopback. ``ray.init`` is replaced here: no Ray starts."""

import types

import pytest


def test_a_local_ray_starts_on_the_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import ray_constants, services

    import tune.resources as resources

    seen = []

    def fake_init(**kwargs):
        seen.append((services.get_node_ip_address(), kwargs.get("dashboard_host")))
        return types.SimpleNamespace(dashboard_url="127.0.0.1:8265")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(resources, "_refuse_second_local_instance", lambda: None)
    monkeypatch.setattr(resources, "filter_worker_echo", lambda: None)
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    assert resources.init_ray(None, echo=lambda text: None) == "http://127.0.0.1:8265"
    assert seen == [("127.0.0.1", "127.0.0.1")]
    assert ray_constants.ENABLE_RAY_CLUSTER == enabled  # only for the call: joining a cluster is unaffected


@pytest.mark.parametrize(("address", "loopback"), [("10.0.0.1:6379", False), ("auto", False),
                                                   ("127.0.0.1:6379", True), ("localhost:6379", True)])
def test_a_loopback_address_to_join_is_kept(monkeypatch: pytest.MonkeyPatch, address: str, loopback: bool) -> None:
    """Ray replaces a loopback HOST by this machine's outward address, where a local run's Ray does not listen;
    other addresses reach Ray as they are."""
    import ray
    from ray._private import ray_constants, services

    import tune.resources as resources

    seen = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.append(ray_constants.ENABLE_RAY_CLUSTER) or
                        types.SimpleNamespace(dashboard_url=""))
    monkeypatch.setattr(resources, "filter_worker_echo", lambda: None)
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    resources.init_ray(address, echo=lambda text: None)
    assert seen == [enabled and not loopback]  # False: Ray keeps loopback addresses as they are
    assert ray_constants.ENABLE_RAY_CLUSTER == enabled
    if loopback:
        with resources._loopback_node():
            assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
