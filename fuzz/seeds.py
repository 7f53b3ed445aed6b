#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/ (generated, not committed).

Seeds are the example appspecs and appspec shapes from the parser's tests, one JSON message of
every kind the agent and the coordinator decode, and the shapes of the agent's hostile-archive
tests (agent/src/bundle/extract/tests.rs) as zip, tar and tar.gz. Only the standard library is
used, so the script runs wherever python3 does. Rerunning it rewrites the same files; inputs
the fuzzer added to a corpus directory are left alone.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def save(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# appspec


APPSPECS = [
    "version: 0.0\nos: linux\n",
    "version: 0.0\nos: windows\n",
    "",
    "- version: 0.0\n",
    """version: "0.0"
os: linux
files:
  - source: /
    destination: /opt/app
  - {source: conf/app.conf, destination: /etc/app/}
file_exists_behavior: RETAIN
permissions:
  - object: /opt/app
    pattern: "*.sh"
    except: [skip.sh]
    type: [file, directory]
    owner: 1000
    group: www-data
    mode: 4755
    acls: ["u:bob:7", "d:g:web:rx", "m::r", "bob:rw", "d:o::r"]
    context: {name: system_u, type: httpd_sys_content_t, range: "s0-s1:c0.c5,c9"}
hooks:
  ValidateService:
    - location: check.sh
      timeout: "30"
      runas: 0
  BeforeInstall:
    - &stop {location: stop.sh, timeout: 5}
  AfterInstall:
    - <<: *stop
      runas: deploy
  Install:
    - location: x.sh
  afterinstall: []
""",
    """version: 0.0
os: linux
base: &base {source: a, destination: /a}
files:
  - *base
  - <<: [*base]
    destination: /b
permissions:
  - object: /a
    mode: 0o644
    type: []
    context: {type: t, range: "s1-s0"}
hooks: !!map {ApplicationStart: [{location: s.sh, timeout: 1.5}]}
""",
    "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: a.sh\n   timeout: 3\n",
    "a: &a [*a]\n",
    "a: &x [1, 2]\nb: &y [*x, *x, *x, *x]\nc: [*y, *y, *y, *y]\n",
    "version: !!float 0\nos: !linux linux\nfiles: [[[[{}]]]]\n",
]


def appspec_seeds():
    for example in sorted(os.listdir(os.path.join(REPO, "examples"))):
        path = os.path.join(REPO, "examples", example, "appspec.yml")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                save("appspec", f.read())
    for text in APPSPECS:
        save("appspec", text)


# ---------------------------------------------------------------------------------------------
# protocol

SHA = "ab" * 32
REVISIONS = [
    {"kind": "coordinator", "sha256": SHA, "size": 1234},
    {"kind": "s3", "bucket": "b", "key": "k.tgz", "version_id": "v1", "etag": "\"e\"", "sha256": SHA},
    {"kind": "url", "url": "https://example.invalid/b.zip", "sha256": SHA},
    {"kind": "git", "repository": "https://example.invalid/r.git", "commit": "a" * 40},
    {"kind": "ftp"},
]
COMMAND = {
    "command_id": "c-1",
    "deployment_id": "d-1",
    "application": "shop",
    "deployment_group": "web",
    "deployment_group_id": "g-1",
    "revision": REVISIONS[0],
    "appspec_path": "deploy/appspec.yml",
    "file_exists_behavior": "OVERWRITE",
    "events": ["ApplicationStop", "Install"],
    "ignore_application_stop_failures": True,
}
HOST = {
    "id": "h-1",
    "name": "web-1",
    "tags": {"role": "web"},
    "agent_version": "0.1.0",
    "first_seen_ms": 1,
    "last_seen_ms": 2,
    "online": True,
    "revoked": False,
    "deployed": [
        {
            "application": "shop",
            "deployment_group": "web",
            "deployment_id": "d-1",
            "revision": REVISIONS[1],
            "ended_ms": 3,
        }
    ],
}
REVISION_INFO = {"id": "r-1", "application": "shop", "revision": REVISIONS[2], "created_ms": 5}
GROUP = {
    "id": "g-1",
    "application": "shop",
    "name": "web",
    "tag_filters": [{"role": "web"}],
    "rollout": {"type": "min_healthy_percent", "percent": 50},
    "auto_rollback": True,
    "created_ms": 1,
    "matching_hosts": ["h-1"],
    "last_successful_revision": REVISION_INFO,
}
DEPLOYMENT = {
    "id": "d-1",
    "application": "shop",
    "deployment_group": "web",
    "revision_id": "r-1",
    "revision": REVISIONS[3],
    "state": "in_progress",
    "creator": "rollback",
    "rollback_of": "d-0",
    "message": "m",
    "rollout": {"type": "min_healthy_hosts", "count": 2},
    "file_exists_behavior": "RETAIN",
    "events": ["Install"],
    "created_ms": 1,
    "ended_ms": 2,
    "counts": {"pending": 1, "in_progress": 0, "succeeded": 0, "failed": 0, "stopped": 0, "skipped": 0},
    "hosts": [
        {
            "host_id": "h-1",
            "host_name": "web-1",
            "command_id": "c-1",
            "state": "failed",
            "failed_event": "AfterInstall",
            "script": "s.sh",
            "exit_code": -3,
            "error_code": "script_failed",
            "log_tail": "line\n",
            "events": [{"event": "Install", "status": "succeeded", "duration_ms": 7}],
            "started_ms": 1,
        }
    ],
    "change_seq": 9,
}
MESSAGES = [
    {"name": "web-1", "tags": {"role": "web", "az": "a"}, "agent_version": "0.1.0"},
    {"name": "web-1", "tags": {}, "agent_version": "0.1.0", "wait_secs": 30},
    {"seq": 1, "at_ms": 2, "type": "event_started", "event": "Install"},
    {
        "seq": 2,
        "at_ms": 3,
        "type": "event_ended",
        "event": "AfterInstall",
        "status": "failed",
        "error_code": "script_timed_out",
        "message": "script s.sh timed out",
        "script": "s.sh",
        "exit_code": 137,
        "log_tail": "[stdout] hi\n",
        "duration_ms": 10,
    },
    {"seq": 3, "at_ms": 4, "type": "completed", "status": "stopped", "failed_event": "Install"},
    {"seq": 4, "at_ms": 5, "type": "from_the_future", "extra": [1]},
    {"name": "shop"},
    {"name": "web", "tag_filters": [{"role": "web"}], "rollout": {"type": "all_at_once"}},
    {"revision": REVISIONS[1]},
    {
        "application": "shop",
        "deployment_group": "web",
        "revision": {"inline": REVISIONS[3]},
        "events": ["Install"],
    },
    {"application": "shop", "deployment_group": "web", "revision": {"id": "r-1"}},
    {"host_id": "h-1", "host_secret": "s"},
    {"command": COMMAND},
    {"command": None},
    {"recorded": True, "aborted": True},
    {"error": "no such group"},
    {"id": "a-1", "name": "shop", "created_ms": 1},
    {"applications": [{"id": "a-1", "name": "shop", "created_ms": 1}]},
    GROUP,
    {"groups": [GROUP]},
    REVISION_INFO,
    {"token": "t"},
    HOST,
    {"hosts": [HOST]},
    {"sha256": SHA, "size": 10},
    DEPLOYMENT,
    {"deployments": [DEPLOYMENT]},
    {"application": "shop", "url": "https://hooks.example/x", "events": ["deployment", "host"]},
    {"webhooks": [{"id": "wh-1", "application": "shop", "url": "http://127.0.0.1:9/",
                   "events": ["release"], "created_ms": 1,
                   "deliveries": [{"event_id": "ev-1", "type": "deployment", "state": "failed",
                                   "summary": "s", "status": "given_up", "attempts": 3,
                                   "last_status": 503, "last_error": "answered 503",
                                   "next_attempt_ms": 0, "created_ms": 1, "ended_ms": 2}]}]},
    {"event_id": "ev-1", "delivered": False, "status": None, "error": "could not connect"},
    {"id": "ev-1", "type": "deployment", "time": "2026-01-01T00:00:00.000Z", "time_ms": 1,
     "application": "shop", "group": "web", "deployment": "d-1", "release": None,
     "host": None, "state": "succeeded", "summary": "s", "link": "http://x/deployments/d-1"},
]

RELEASE = {
    "id": "rel-1", "pipeline": "ship", "application": "shop", "revision_id": "r-1",
    "revision": REVISIONS[0], "state": "awaiting_approval", "creator": "source",
    "source_ref": "refs/heads/main", "message": "m", "created_ms": 1, "ended_ms": None,
    "stages": [
        {"group": "staging", "variables": {"DEPLOY_MODE": "destructive"}, "state": "succeeded",
         "deployment_id": "d-1", "started_ms": 1, "ended_ms": 2},
        {"group": "prod", "manual_approval": True, "state": "awaiting_approval",
         "approved_by": "ops", "approved_ms": 3, "comment": "ok"},
    ],
    "change_seq": 4,
}
PIPELINE = {
    "name": "ship", "application": "shop",
    "source": {"git": {"url": "git://127.0.0.1/r.git", "branch": "main", "poll_secs": 30}},
    "source_status": {"last": "a" * 40, "error": "e", "checked_ms": 1, "failures": 2, "next_ms": 3},
    "stages": [{"group": "staging"}, {"group": "prod", "manual_approval": True,
                                      "variables": {"DEPLOY_MODE": "normal"}}],
    "created_ms": 1, "updated_ms": 2, "releases": [RELEASE],
}
MESSAGES += [
    {"command_id": "c-1"},
    {"aborted": True},
    {"group_id": "g-1", "deployment_id": "d-1", "rollback_id": "rb-1", "rolled_back_at_ms": 5},
    {"recorded": True},
    {"catch_up": False, "bake_secs": 30, "rollout": {"type": "one_at_a_time"}, "auto_rollback": True},
    {"tags": {"role": "web"}},
    {"expires_secs": 60, "max_uses": 3, "allowed_tags": {"role": ["web", "db"]}},
    {"role": "deployer", "name": "ci"},
    {"token": "op-secret", "id": "op-1", "role": "viewer", "name": None},
    {"yaml": "name: ship\napplication: shop\nstages:\n  - group: staging\n"},
    {"revision": {"id": "r-1"}},
    {"revision": "previous"},
    {"revision": {"inline": REVISIONS[3]}},
    {"comment": "looks good", "by": "ops"},
    RELEASE,
    {"releases": [RELEASE]},
    PIPELINE,
    {"pipelines": [PIPELINE]},
]


def protocol_seeds():
    for message in MESSAGES:
        save("protocol", json.dumps(message))
    for revision in REVISIONS:
        save("protocol", json.dumps({"command": dict(COMMAND, revision=revision)}))


# ---------------------------------------------------------------------------------------------
# archives


def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (name, type, data or link target, mode) tuples."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = 1_600_000_000
            data = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
            elif kind == tarfile.REGTYPE:
                data = io.BytesIO(payload)
                info.size = len(payload)
            tar.addfile(info, data)
    return out.getvalue()


def zip_bytes(entries):
    """entries: (name, data, unix mode or None) tuples; mode carries the file type bits."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            z.writestr(info, data)
    return out.getvalue()


def gz(data):
    return gzip.compress(data, mtime=0)


F, D, L, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
TREE = [
    ("appspec.yml", F, b"version: 0.0\nos: linux\n", 0o644),
    ("scripts/", D, b"", 0o755),
    ("scripts/start.sh", F, b"#!/bin/sh\necho start\n", 0o755),
    ("site/index.html", F, b"<h1>hi</h1>\n", 0o644),
    ("site/current", L, "index.html", 0o777),
    ("site/copy.html", H, "site/index.html", 0o644),
    ("up/link", L, "../site", 0o777),
]
HOSTILE_TARS = [
    [("/etc/hoist-fuzz", F, b"x", 0o644)],
    [("a/../../escape", F, b"x", 0o644)],
    [("..", D, b"", 0o755)],
    [("evil", L, "/etc", 0o777), ("evil/passwd", F, b"x", 0o644)],
    [("evil", L, "..", 0o777), ("evil/x", F, b"x", 0o644)],
    [("d/up", L, "..", 0o777), ("d/esc", L, "up/../..", 0o777)],
    [("a/b", L, "../../outside", 0o777)],
    [("x", H, "/etc/passwd", 0o644)],
    [("x", H, "../bundle", 0o644)],
    [("x", H, "x", 0o644)],
    [("dev", tarfile.CHRTYPE, b"", 0o644)],
    [("blk", tarfile.BLKTYPE, b"", 0o644)],
    [("fifo", tarfile.FIFOTYPE, b"", 0o644)],
    [("suid", F, b"#!/bin/sh\n", 0o4755), ("ro/", D, b"", 0o500), ("ro/f", F, b"f", 0o400)],
    [("dup", F, b"one", 0o644), ("dup", L, "elsewhere", 0o777), ("dup", F, b"two", 0o644)],
    [("f", F, b"file", 0o644), ("f/child", F, b"x", 0o644)],
    [("d/", D, b"", 0o755), ("d", F, b"now a file", 0o644)],
    [("long/" + "n" * 150 + "/file", F, b"gnu long name", 0o644)],
]


def archive_seeds():
    tree = tar_bytes(TREE)
    save("extract", tree)
    save("extract", gz(tree))
    save("extract", tar_bytes(TREE, tarfile.PAX_FORMAT))
    save("extract", tar_bytes(TREE, tarfile.USTAR_FORMAT)[:4096])
    for entries in HOSTILE_TARS:
        data = tar_bytes(entries)
        save("extract", data)
        save("extract", gz(data))
    # An old v7 header (no ustar magic), and a header claiming more bytes than follow.
    v7 = bytearray(tar_bytes([("v7.txt", F, b"seven", 0o644)], tarfile.USTAR_FORMAT))
    v7[257:265] = b"\0" * 8
    v7[148:156] = b" " * 8
    v7[148:156] = b"%06o\0 " % sum(v7[:512])
    save("extract", bytes(v7))
    lying = bytearray(tar_bytes([("big", F, b"small", 0o644)]))
    lying[124:136] = b"%011o\0" % 100000
    lying[148:156] = b" " * 8
    lying[148:156] = b"%06o\0 " % sum(lying[:512])
    save("extract", bytes(lying))
    # Numeric fields in GNU base-256 form (a marker byte, then big-endian), as GNU tar writes
    # values too large for octal.
    b256 = bytearray(tar_bytes(TREE[:1]))
    b256[136:148] = b"\x80\0\0\0" + (1_600_000_000).to_bytes(8, "big")
    b256[148:156] = b" " * 8
    b256[148:156] = b"%06o\0 " % sum(b256[:512])
    save("extract", bytes(b256))
    # Several gzip members in a row, as `cat a.tgz b.tgz` makes.
    save("extract", gz(tree) + gz(tar_bytes(HOSTILE_TARS[0])))

    reg, dirm, lnk = 0o100644, 0o040755, 0o120777
    save(
        "extract",
        zip_bytes(
            [
                ("appspec.yml", b"version: 0.0\nos: linux\n", reg),
                ("scripts/", b"", dirm),
                ("scripts/start.sh", b"#!/bin/sh\n", 0o100755),
                ("site/current", b"../appspec.yml", lnk),
                ("plain.txt", b"no unix mode", None),
            ]
        ),
    )
    for entries in [
        [("../escape", b"x", reg)],
        [("/abs", b"x", reg)],
        [("evil", b"/etc", lnk), ("evil/passwd", b"x", reg)],
        [("a/b", b"../../outside", lnk)],
        [("dev", b"", 0o020644)],
        [("fifo", b"", 0o010644)],
        [("sock", b"", 0o140644)],
        [("suid", b"#!/bin/sh\n", 0o104755)],
        [("zeros", b"\0" * 200_000, reg)],
        [("dup", b"one", reg), ("dup", b"two", reg)],
        [("weird", b"x", 0o170644)],
    ]:
        save("extract", zip_bytes(entries))


def main():
    # Duplicate names in a zip are one of the seeds, not a mistake.
    warnings.filterwarnings("ignore", message="Duplicate name")
    appspec_seeds()
    protocol_seeds()
    archive_seeds()
    counts = {t: len(os.listdir(os.path.join(CORPUS, t))) for t in sorted(os.listdir(CORPUS))}
    print("seed corpora in fuzz/corpus: " + ", ".join(f"{t} {n}" for t, n in counts.items()))


if __name__ == "__main__":
    sys.exit(main())
