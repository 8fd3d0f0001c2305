"""The artifact contract (shared/artifact/): publishing, CURRENT, verification, gc and the
writer lock."""

import os
import socket
import subprocess
import sys

import pytest

from groundrec.shared import artifact
from groundrec.shared.artifact import Manifest, publish, staging_dir, verify
from groundrec.shared.errors import UserError


def _manifest(vid):
    return Manifest(version=vid, created_at="now", code_version="test", models={}, prompt={}, text_template="{t}",
                    dim=4, counts={}, index={}, timings_s={})


def _publish_one(root, payload):
    vid = artifact.new_version_id()
    staged = staging_dir(root, vid)
    for name in artifact.REQUIRED_FILES:
        (staged / name).write_bytes(b"placeholder")
    (staged / "data.bin").write_bytes(payload)
    publish(root, staged, _manifest(vid))
    return vid


def test_publish_switches_current_and_verify_catches_tampering(tmp_path):
    v1 = _publish_one(tmp_path, b"one")
    v2 = _publish_one(tmp_path, b"two")
    assert artifact.current_version(tmp_path) == v2 and artifact.list_versions(tmp_path) == sorted([v1, v2])
    assert not any((tmp_path / artifact.STAGING).iterdir())
    path = artifact.current_path(tmp_path)
    verify(path)
    (path / "data.bin").write_bytes(b"TWO")
    with pytest.raises(ValueError, match="data.bin: checksum mismatch"):
        verify(path)
    artifact.activate(tmp_path, v1)
    assert artifact.current_version(tmp_path) == v1
    with pytest.raises(ValueError, match="no published version"):
        artifact.activate(tmp_path, "nope")


def test_a_manifest_must_vouch_for_the_core_files(tmp_path):
    path = artifact.VersionFiles(tmp_path / artifact.VERSIONS / _publish_one(tmp_path, b"x")).root
    manifest = artifact.read_manifest(path)
    manifest.files = {}
    (path / artifact.MANIFEST).write_text(manifest.model_dump_json())
    with pytest.raises(ValueError, match="index.faiss: not listed in the manifest"):
        verify(path)


def test_a_version_of_a_newer_format_is_refused_with_the_reason(tmp_path):
    """format_version was written and never read: an older server served a version whose
    files a newer job gave another meaning."""
    path = artifact.VersionFiles(tmp_path / artifact.VERSIONS / _publish_one(tmp_path, b"x")).root
    manifest = artifact.read_manifest(path)
    (path / artifact.MANIFEST).write_text(manifest.model_copy(update={"format_version": artifact.FORMAT_VERSION + 1})
                                          .model_dump_json())
    with pytest.raises(ValueError, match="newer than this groundrec reads"):
        verify(path)


def test_current_must_hold_a_version_id(tmp_path):
    vid = _publish_one(tmp_path, b"x")
    for bad in (b"../../elsewhere/" + vid.encode(), b"\xff\xfe", b"x" * 5_000_000):
        (tmp_path / artifact.CURRENT).write_bytes(bad + b"\n")
        with pytest.raises(ValueError, match="does not hold a version id") as e:
            artifact.current_version(tmp_path)
        assert len(str(e.value)) < 300  # a huge pointer is not echoed back


def test_gc_never_deletes_the_active_version(tmp_path):
    vids = [_publish_one(tmp_path, bytes([i])) for i in range(4)]
    artifact.activate(tmp_path, vids[0])  # roll back to the oldest
    deleted = artifact.gc(tmp_path, keep=2)
    assert vids[0] in artifact.list_versions(tmp_path)
    assert artifact.list_versions(tmp_path) == sorted([vids[0], vids[3]]) and len(deleted) == 2


def test_gc_keeps_an_old_version_it_cannot_move_and_collects_the_rest(tmp_path, monkeypatch, caplog):
    """An old version's folder the job cannot move (its permissions, a busy mount) raised out of
    gc: the job that had just activated its version failed after it was serving. It is kept
    and logged; the others are collected."""
    import os

    from groundrec.shared.artifact import retention

    vids = [_publish_one(tmp_path, bytes([i])) for i in range(4)]
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(vids[0]):
            raise PermissionError(13, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(retention.os, "replace", replace)
    with caplog.at_level("WARNING", logger="groundrec.artifact"):
        deleted = artifact.gc(tmp_path, keep=1)
    left = artifact.list_versions(tmp_path)
    assert deleted and deleted[0] == vids[1] and vids[0] in left and not set(deleted) & set(left)  # oldest kept
    assert any(vids[0] in r.getMessage() and "could not be collected" in r.getMessage() for r in caplog.records)


def test_gc_keeps_the_newest_verified_version_when_current_is_broken(tmp_path):
    vids = [_publish_one(tmp_path, bytes([i])) for i in range(3)]
    broken = artifact.version_path(tmp_path, vids[2])
    (broken / artifact.INDEX).write_bytes(b"damaged")  # CURRENT now names a version servers reject
    assert artifact.newest_verified(tmp_path) == vids[1]
    deleted = artifact.gc(tmp_path, keep=1)
    assert deleted == [vids[0]] and artifact.list_versions(tmp_path) == vids[1:]


def test_gc_never_deletes_what_a_server_reports_serving(tmp_path):
    vids = [_publish_one(tmp_path, bytes([i])) for i in range(4)]
    marker = artifact.record_serving(tmp_path, vids[0])  # this (live) process serves the oldest
    place = marker.name.rpartition("-")[0]  # this host and PID namespace
    gone = tmp_path / artifact.SERVING / f"{place}-999999999"
    gone.write_text(vids[1] + "\n")  # a server that died without cleaning up protects nothing
    assert artifact.serving_versions(tmp_path) == {vids[0]} and not gone.exists()
    assert artifact.gc(tmp_path, keep=1) == [vids[1], vids[2]]
    assert artifact.list_versions(tmp_path) == [vids[0], vids[3]]
    artifact.forget_serving(marker)
    assert artifact.gc(tmp_path, keep=1) == [vids[0]]


def test_a_marker_from_another_container_with_the_same_hostname_is_not_pruned_by_its_pid(tmp_path, monkeypatch):
    """Containers sharing a hostname and a mounted root number their processes apart: a pid
    gone here may be serving there."""
    vids = [_publish_one(tmp_path, bytes([i])) for i in range(3)]
    with monkeypatch.context() as other:  # a server in another container: its own PID namespace and pids
        other.setattr(os, "readlink", lambda path: "pid:[4026599999]")
        other.setattr(os, "getpid", lambda: 999_999_999)
        there = artifact.record_serving(tmp_path, vids[0])
    assert artifact.serving_versions(tmp_path) == {vids[0]} and there.exists()
    assert artifact.gc(tmp_path, keep=1) == [vids[1]]
    os.utime(there, (0, 0))  # no longer refreshed: it protects nothing, and stays for its host to prune
    assert artifact.serving_versions(tmp_path) == set() and there.exists()


def test_versions_cli_lists_rolls_back_and_collects(tmp_path):
    vids = [_publish_one(tmp_path, bytes([i])) for i in range(3)]

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "versions", *args, "--artifacts", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    rc, out = cli("list")
    assert rc == 0 and f"* {vids[2]}" in out and f"  {vids[0]}" in out
    rc, out = cli("activate", vids[0])
    assert rc == 0 and artifact.current_version(tmp_path) == vids[0]
    rc, out = cli("activate", "no-such-version")
    assert rc == 2 and "no published version" in out
    (artifact.version_path(tmp_path, vids[1]) / "data.bin").write_bytes(b"damaged")
    rc, out = cli("activate", vids[1])  # a copy that does not verify: refused, naming the file
    assert rc == 2 and "data.bin: checksum mismatch" in out and artifact.current_version(tmp_path) == vids[0]
    rc, out = cli("gc", "--keep", "1")  # the active one and the newest verified one both stay
    assert rc == 0 and artifact.list_versions(tmp_path) == [vids[0], vids[2]]
    for args in (["list"], ["activate", vids[0]], ["gc", "--keep", "1"]):  # an object-store root: said, not silent
        r = subprocess.run([sys.executable, "-m", "groundrec.shared.cli", "versions", *args, "--artifacts",
                            "s3://bucket/groundrec"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "local folder the offline job writes to" in r.stdout + r.stderr, args


def test_gc_keeps_a_version_activated_while_it_runs(tmp_path, monkeypatch):
    """A rollback to an old version while gc hashes the newest: gc read CURRENT before it and
    deleted the version CURRENT now names."""
    from groundrec.shared.artifact import retention

    vids = [_publish_one(tmp_path, bytes([i])) for i in range(4)]
    real = retention.newest_verified

    def rolled_back_meanwhile(*args, **kwargs):
        artifact.activate(tmp_path, vids[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "newest_verified", rolled_back_meanwhile)
    deleted = artifact.gc(tmp_path, keep=1)
    assert vids[0] not in deleted and vids[0] in artifact.list_versions(tmp_path) and vids[1] in deleted


def test_one_writer_per_artifacts_root_and_stale_staging_is_cleaned(tmp_path):
    stale = tmp_path / artifact.STAGING / "20260101T000000.000000Z-dead00"
    stale.mkdir(parents=True)
    (stale / "index.faiss").write_bytes(b"half-written by a killed run")
    with artifact.writer_lock(tmp_path):
        assert not stale.exists()
        with pytest.raises(artifact.Locked, match=r"another groundrec job is publishing .*pid \d+"):
            with artifact.writer_lock(tmp_path):
                pass
    with artifact.writer_lock(tmp_path):  # released: the next job gets it
        pass


def test_publishing_publishes_once_or_leaves_what_is_published_as_it_was(tmp_path):
    first = _publish_one(tmp_path, b"one")
    with pytest.raises(RuntimeError, match="stage failed"):
        with artifact.publishing(tmp_path) as pub:
            (pub.staged / "data.bin").write_bytes(b"half")
            raise RuntimeError("stage failed")
    with artifact.publishing(tmp_path) as pub:  # a block left without publish() publishes nothing either
        (pub.staged / "data.bin").write_bytes(b"unfinished")
    assert artifact.current_version(tmp_path) == first and artifact.list_versions(tmp_path) == [first]
    assert not any((tmp_path / artifact.STAGING).iterdir())
    with artifact.publishing(tmp_path) as pub:
        with pytest.raises(artifact.Locked):  # the lock is held for the whole block
            with artifact.writer_lock(tmp_path):
                pass
        for name in artifact.REQUIRED_FILES:
            (pub.staged / name).write_bytes(b"placeholder")
        final = pub.publish(_manifest(pub.version))
    assert artifact.current_version(tmp_path) == pub.version and final == artifact.current_path(tmp_path)
    verify(final)


def _to_memory(root, name):
    import fsspec

    fs = fsspec.filesystem("memory")
    uri = f"memory://groundrec-{name}"
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            fs.pipe_file(f"{uri}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return fs, uri


def test_a_remote_version_caught_mid_upload_is_refused_and_never_cached(tmp_path):
    from groundrec.shared.artifact.store import fetch_version

    vid = _publish_one(tmp_path / "root", b"payload")
    fs, uri = _to_memory(tmp_path / "root", tmp_path.name + "-upload")
    whole = fs.cat_file(f"{uri}/versions/{vid}/data.bin")
    fs.rm_file(f"{uri}/versions/{vid}/data.bin")  # the manifest is there, a file not yet
    with pytest.raises(UserError, match="data.bin: missing"):
        fetch_version(uri, vid, tmp_path / "cache")
    assert not (tmp_path / "cache" / vid).exists() and not list((tmp_path / "cache").iterdir())  # no leftovers
    fs.pipe_file(f"{uri}/versions/{vid}/data.bin", whole)  # the upload finishes: the next try takes it
    assert (fetch_version(uri, vid, tmp_path / "cache") / "data.bin").read_bytes() == b"payload"


def test_a_remote_object_key_reaching_outside_the_version_is_refused_before_anything_is_written(tmp_path):
    """Object stores allow '..' in keys: it was written outside the local copy, before the
    manifest's checksums were read."""
    from groundrec.shared.artifact.store import fetch_version

    vid = _publish_one(tmp_path / "root", b"payload")
    fs, uri = _to_memory(tmp_path / "root", tmp_path.name + "-escape")
    fs.pipe_file(f"{uri}/versions/{vid}/../../../../escaped.txt", b"x")
    with pytest.raises(UserError, match="not a file name inside version folder"):
        fetch_version(uri, vid, tmp_path / "deep" / "cache")
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "deep" / "cache" / vid).exists()
    fs.rm_file(f"{uri}/versions/{vid}/../../../../escaped.txt")
    fs.pipe_file(f"{uri}/versions/{vid}/..\\..\\escaped.txt", b"x")  # a Windows path's escape
    with pytest.raises(UserError, match="not a file name inside version folder"):
        fetch_version(uri, vid, tmp_path / "deep" / "cache")


def test_a_version_cache_of_another_user_is_refused(tmp_path, monkeypatch):
    import os

    from groundrec.shared.artifact.store import fetch_version

    vid = _publish_one(tmp_path / "root", b"payload")
    _, uri = _to_memory(tmp_path / "root", tmp_path.name + "-owner")
    (tmp_path / "cache").mkdir()
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    with monkeypatch.context() as m:  # a folder not this user's that anyone may write (root's: a volume left open)
        m.setattr(os, "getuid", lambda: os.stat(tmp_path / "open").st_uid + 1)
        with pytest.raises(UserError, match="anyone may write"):
            fetch_version(uri, vid, tmp_path / "open")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine").chmod(0o777)  # this user's own, made under a umask of 0: closed, then used
    assert (fetch_version(uri, vid, tmp_path / "mine") / "data.bin").read_bytes() == b"payload"
    assert os.stat(tmp_path / "mine").st_mode & 0o022 == 0
    assert (fetch_version(uri, vid, tmp_path / "cache") / "data.bin").read_bytes() == b"payload"  # its own: fetched
    (tmp_path / "theirs").mkdir()
    if os.getuid() == 0:
        os.chown(tmp_path / "theirs", 4321, -1)  # another user's folder
    else:  # this user's folder, as another user would see it (root's folders are trusted: a root-owned volume)
        monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path / "theirs").st_uid + 1)
    with pytest.raises(UserError, match="belongs to another user"):
        fetch_version(uri, vid, tmp_path / "theirs")


def test_two_processes_fetching_one_remote_version_at_once_both_get_it(tmp_path, monkeypatch):
    """The second copy to arrive finds the first in place (a folder is not replaced): it uses
    that one instead of failing (which rejected the version in that process for good)."""
    import shutil

    from groundrec.shared.artifact import store

    vid = _publish_one(tmp_path / "root", b"payload")
    _, uri = _to_memory(tmp_path / "root", tmp_path.name + "-race")
    cache = tmp_path / "cache"
    real = store.verify

    def another_process_wins(directory):  # while this copy is checked, the other one lands
        shutil.copytree(directory, cache / vid)
        return real(directory)

    monkeypatch.setattr(store, "verify", another_process_wins)
    assert (store.fetch_version(uri, vid, cache) / "data.bin").read_bytes() == b"payload"
    assert sorted(p.name for p in cache.iterdir()) == [vid]  # this process's copy removed


def test_a_version_is_on_disk_before_current_names_it(tmp_path, monkeypatch):
    """Every file of the version is flushed (fsync) before CURRENT moves: after a power cut
    CURRENT could name a version whose files were still empty."""
    import os

    synced, order = set(), []
    real_fsync = os.fsync

    def recording(fd):
        synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    real_replace = os.replace

    def replacing(src, dst):
        order.append((str(dst), set(synced)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording)
    monkeypatch.setattr(os, "replace", replacing)
    vid = _publish_one(tmp_path, b"payload")
    at_current = next(seen for dst, seen in order if dst.endswith(artifact.CURRENT))
    staged_files = {str(p) for p in (tmp_path / artifact.VERSIONS / vid).rglob("*") if p.is_file()}
    moved = {f.replace(f"/{artifact.VERSIONS}/{vid}/", f"/.staging/{vid}/") for f in staged_files}
    assert moved <= at_current, moved - at_current


def test_the_remote_version_cache_keeps_the_newest_few(tmp_path):
    """Every version a service ever fetched stayed in /tmp: nightly versions filled the disk."""
    import os

    from groundrec.shared.artifact.store import CACHE_KEEP, fetch_version

    vids = [_publish_one(tmp_path / "root", bytes([i])) for i in range(CACHE_KEEP + 2)]
    _, uri = _to_memory(tmp_path / "root", tmp_path.name + "-cache")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".stale.0123").mkdir()  # a copy a killed fetch left, long ago
    os.utime(cache / ".stale.0123", (0, 0))
    for vid in vids:
        fetch_version(uri, vid, cache)
    assert sorted(p.name for p in cache.iterdir()) == vids[-CACHE_KEEP:]
    assert (fetch_version(uri, vids[0], cache) / "data.bin").read_bytes() == bytes([0])  # fetched again, kept
    assert vids[0] in [p.name for p in cache.iterdir()]


def test_a_cached_remote_copy_gone_bad_is_fetched_again(tmp_path):
    """A cached copy that no longer verifies (a disk, a cache an older release filled) was
    reused on every retry, forever rejected."""
    from groundrec.shared.artifact.store import fetch_version

    vid = _publish_one(tmp_path / "root", b"payload")
    _, uri = _to_memory(tmp_path / "root", tmp_path.name + "-heal")
    local = fetch_version(uri, vid, tmp_path / "cache")
    (local / "data.bin").write_bytes(b"rotten")
    again = fetch_version(uri, vid, tmp_path / "cache")
    assert (again / "data.bin").read_bytes() == b"payload" and verify(again)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [vid]


def test_gc_keeps_what_a_server_falls_back_to_when_the_gate_refused_the_newer_versions(tmp_path):
    """Seven nightly versions activated, then four the gate refused (published, CURRENT kept):
    gc(keep=5) kept the refused ones and deleted every version that had been current before,
    so a server whose CURRENT cannot load had nothing to fall back to."""
    activated = []
    for i in range(7):
        activated.append(_publish_one(tmp_path, bytes([i])))
        artifact.record_activation(tmp_path, activated[-1], "offline run (activate: gate)")
    refused = []
    for i in range(4):
        vid = artifact.new_version_id()
        staged = staging_dir(tmp_path, vid)
        for name in artifact.REQUIRED_FILES:
            (staged / name).write_bytes(b"placeholder")
        publish(tmp_path, staged, _manifest(vid), activate_it=False)
        refused.append(vid)
    assert artifact.current_version(tmp_path) == activated[-1]
    artifact.gc(tmp_path, keep=5)
    left = artifact.list_versions(tmp_path)
    assert set(activated[-1 - artifact.FALLBACK_TRIES:]) <= set(left)  # CURRENT and its fallbacks
    assert artifact.fallbacks(tmp_path, activated[-1], left) == activated[-2:-2 - artifact.FALLBACK_TRIES:-1]


def test_the_fallback_after_a_rollback_is_the_version_rolled_back_to_and_a_broken_log_line_is_skipped(tmp_path):
    """V1 current, V2 activated and rolled back from, V3 activated and not loadable: the
    fallbacks went by version id (V2 first, the one rolled away from). And a line of
    activations.jsonl a full disk cut short stopped every fallback and every gc."""
    from groundrec.shared.artifact.activations import ACTIVATIONS, activations, record_activation

    v1, v2, v3 = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc"
    for v, by in ((v1, "job"), (v2, "job"), (v1, "versions activate"), (v3, "job")):
        record_activation(tmp_path, v, by)
    assert artifact.fallbacks(tmp_path, v3, [v1, v2, v3]) == [v1, v2]
    with open(tmp_path / ACTIVATIONS, "a") as f:
        f.write('{"at": 1, "version": "2026')  # cut short: no newline, no closing brace
    record_activation(tmp_path, v2, "versions activate")  # starts on a line of its own
    assert [a["version"] for a in activations(tmp_path)] == [v1, v2, v1, v3, v2]
    assert artifact.fallbacks(tmp_path, v3, [v1, v2, v3]) == [v2, v1]


def test_a_rollback_made_while_a_job_activates_waits_and_then_holds(tmp_path):
    """The job looked at CURRENT, then hashed and renamed its version for seconds, then moved
    CURRENT: a `versions activate` (rollback) in between was overwritten. The job now holds
    ``current_lock`` from its look through its activation; the rollback waits, then holds."""
    import threading
    import time

    old, served = _publish_one(tmp_path, b"\x01"), _publish_one(tmp_path, b"\x02")
    with artifact.current_lock(tmp_path):  # the job: its look at CURRENT ... its activation
        assert artifact.current_version(tmp_path) == served
        rollback = threading.Thread(target=artifact.activate, args=(tmp_path, old))
        rollback.start()
        time.sleep(0.3)
        assert rollback.is_alive()  # the operator's rollback waits for the job's activation
        new = _publish_one(tmp_path, b"\x03")  # publish activates it (the lock is re-entrant)
        assert artifact.current_version(tmp_path) == new
    rollback.join(10)
    assert artifact.current_version(tmp_path) == old  # ... and then holds


def test_gc_waits_for_an_activation_and_keeps_what_it_activated(tmp_path):
    import threading
    import time

    vids = [_publish_one(tmp_path, bytes([i])) for i in range(4)]
    with artifact.current_lock(tmp_path):  # an activation under way
        collector = threading.Thread(target=artifact.gc, args=(tmp_path, 1))
        collector.start()
        time.sleep(0.3)
        assert collector.is_alive()  # gc waits for the activation under way
        artifact.activate(tmp_path, vids[0])  # a rollback to the oldest, which gc had doomed
    collector.join(10)
    assert artifact.current_version(tmp_path) == vids[0] and vids[0] in artifact.list_versions(tmp_path)
    assert not list((tmp_path / artifact.VERSIONS).glob(".deleting-*")) and not list(tmp_path.glob(".deleting-*"))


def test_the_job_deletes_old_versions_after_it_lets_go_of_current(tmp_path):
    """gc deleting old versions (gigabytes) ran inside the CURRENT lock the job holds through its
    activation, so a rollback waited on it: ``publish(collect=False)`` then ``collect()``."""
    for i in range(3):
        _publish_one(tmp_path, bytes([i]))
    with artifact.publishing(tmp_path, keep=1) as pub:
        for name in artifact.REQUIRED_FILES:
            (pub.staged / name).write_bytes(b"placeholder")
        with artifact.current_lock(tmp_path):
            pub.publish(_manifest(pub.version), collect=False)
            assert len(artifact.list_versions(tmp_path)) == 4  # nothing deleted while CURRENT is held
        assert len(pub.collect()) == 3 and artifact.list_versions(tmp_path) == [pub.version]
