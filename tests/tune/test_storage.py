"""tune.storage's decision, without Ray: the per-node probe is injected (the real one runs in
tests/tune/test_multinode.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hmh.errors import HmhError
from hmh.results.tables import is_uri, storage_dir
from tune.resources import ClusterError
from tune.storage import MARKER_PREFIX, Node, SharedStorageError, check_shared_storage

HEAD = Node("a" * 56, "10.0.0.1")
GPU1 = Node("b" * 56, "10.0.0.2")
GPU2 = Node("c" * 56, "10.0.0.3")


class FakeProbe:
    """Answers per node id; records what it was asked and whether the marker existed while it was asked."""

    def __init__(self, answers: dict[str, bool | None]):
        self.answers = answers
        self.calls: list[tuple[list[Node], str, bool]] = []

    def __call__(self, nodes: Sequence[Node], marker: str) -> dict[str, bool | None]:
        self.calls.append((list(nodes), marker, Path(marker).is_file()))
        return {n.node_id: self.answers[n.node_id] for n in nodes}


def test_uris_and_single_nodes_are_not_probed(tmp_path):
    probe = FakeProbe({})
    for uri in ("s3://bucket/results", "gs://b/r", "hdfs://nn:8020/r"):
        assert is_uri(uri)
        check_shared_storage(uri, [HEAD, GPU1], probe)
    check_shared_storage(str(tmp_path / "r"), [HEAD], probe)
    check_shared_storage(str(tmp_path / "r"), [], probe)
    assert probe.calls == []
    assert not (tmp_path / "r").exists()
    assert not is_uri("/mnt/shared/results") and not is_uri("")


def test_shared_path_passes_and_the_marker_is_removed(tmp_path):
    probe = FakeProbe({HEAD.node_id: True, GPU1.node_id: True, GPU2.node_id: True})
    storage = tmp_path / "shared" / "results"
    check_shared_storage(str(storage), [HEAD, GPU1, GPU2], probe)
    (nodes, marker, existed), = probe.calls
    assert nodes == [HEAD, GPU1, GPU2]
    assert existed and Path(marker).parent == storage and Path(marker).name.startswith(MARKER_PREFIX)
    assert list(storage.iterdir()) == []


def test_node_local_path_is_rejected_naming_key_value_and_nodes(tmp_path):
    probe = FakeProbe({HEAD.node_id: True, GPU1.node_id: False, GPU2.node_id: True})
    storage = tmp_path / "results"
    with pytest.raises(SharedStorageError) as info:
        check_shared_storage(str(storage), [HEAD, GPU1, GPU2], probe)
    message = str(info.value)
    assert f"search.storage_path={str(storage)!r}" in message
    assert "10.0.0.2" in message and "b" * 12 in message
    assert "10.0.0.1" not in message and "10.0.0.3" not in message
    assert "s3://" in message and "gs://" in message and "NFS" in message
    assert isinstance(info.value, ClusterError) and isinstance(info.value, HmhError)
    assert list(storage.iterdir()) == []  # marker removed on failure too


def test_default_storage_is_results_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_dir("") == tmp_path / "results"
    probe = FakeProbe({HEAD.node_id: True, GPU1.node_id: False})
    with pytest.raises(SharedStorageError, match=r"search.storage_path='' \(.*results\)"):
        check_shared_storage("", [HEAD, GPU1], probe)


def test_a_node_that_does_not_answer_is_logged_not_failed(tmp_path, caplog):
    probe = FakeProbe({HEAD.node_id: True, GPU1.node_id: None})
    check_shared_storage(str(tmp_path), [HEAD, GPU1], probe)
    assert "did not answer" in caplog.text and "10.0.0.2" in caplog.text


def test_probe_failure_still_removes_the_marker(tmp_path):
    def broken(nodes, marker):
        raise RuntimeError("probe crashed")

    with pytest.raises(RuntimeError):
        check_shared_storage(str(tmp_path), [HEAD, GPU1], broken)
    assert list(tmp_path.iterdir()) == []
