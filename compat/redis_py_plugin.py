"""pytest plugin used by compat/run to drive redis-py's own test suite.

Loaded with `-p redis_py_plugin` (compat/ on PYTHONPATH). Options:

  --compat-mode MODE       plain (default) or cluster: which client redis-py's
                           fixtures hand the tests, and which list of the
                           selection file applies. redis-py's conftest picks
                           its client from the server's INFO cluster_enabled;
                           plain forces redis.Redis (an application with a
                           plain client pointed at one node of a ringkv
                           cluster, which ringkv serves without MOVED), and
                           cluster requires the server to report
                           cluster_enabled:1 (fixtures hand out RedisCluster).
                           cluster also turns off the tracemalloc tracing
                           redis-py's conftest starts (see _no_tracemalloc).
  --compat-selection FILE  keep only the tests the selection file selects
                           (format: see compat/redis-py-selection.txt:
                           unqualified entries are the plain list, entries
                           written "+[cluster]"/"-[cluster]" the cluster
                           list; "- @marker" entries drop every test with
                           that pytest marker, before any per-test entry);
                           every collected test must be listed (+ or -) in
                           the mode's list, and every entry of that list
                           must match a collected test: anything else is
                           reported as selection drift.
  --compat-summary FILE    write a JSON summary: per-test outcomes folded over
                           setup/call/teardown (passed / failed / skipped), the
                           drift, and the ids of the failures.
  --compat-record FILE     record the Redis commands every test sends (client
                           side, sync and asyncio clients) as JSON lines
                           {"nodeid", "outcome", "commands", "call_commands"}
                           (call_commands: sent by the test body, not by
                           fixtures); compat/classify
                           reads them to draft the selection.

Python stdlib + pytest only.
"""

import json
import re

import pytest

# Container commands whose first argument names the real command.
_CONTAINERS = {
    b"ACL", b"CLIENT", b"CLUSTER", b"COMMAND", b"CONFIG", b"DEBUG", b"FUNCTION",
    b"LATENCY", b"MEMORY", b"MODULE", b"OBJECT", b"PUBSUB", b"SCRIPT",
    b"SLOWLOG", b"XGROUP", b"XINFO",
}


MODES = ("plain", "cluster")


def parse_selection(path, mode="plain"):
    """Return [(sign, entry, reason, lineno)] of the mode's list in a
    selection file: unqualified entries for plain, "[cluster]" ones for
    cluster (the other list is parsed, checked and left out)."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([+-])(?:\[(\w+)\])?\s+(\S+)\s*(?:#\s*(.*))?$", line)
            if not m:
                raise pytest.UsageError(f"{path}:{lineno}: cannot parse: {line!r}")
            sign, qualifier, entry = m.group(1), m.group(2), m.group(3)
            reason = (m.group(4) or "").strip()
            if qualifier is not None and qualifier != "cluster":
                raise pytest.UsageError(f"{path}:{lineno}: unknown list [{qualifier}]: {line!r}")
            if sign == "-" and not reason:
                raise pytest.UsageError(f"{path}:{lineno}: a skip needs a reason: {line!r}")
            if (qualifier or "plain") == mode:
                entries.append((sign, entry, reason, lineno))
    return entries


def selection_files(path, mode="plain"):
    """Test files to collect: those with at least one + entry in the mode's list."""
    files = []
    for sign, entry, _, _ in parse_selection(path, mode):
        f = entry.split("::", 1)[0]
        if sign == "+" and not f.startswith("@") and f not in files:
            files.append(f)
    return files


def _decide(nodeid, table):
    """Most specific entry for nodeid: exact id, id without [params], then
    the longest file/class prefix. Returns the entry key or None."""
    if nodeid in table:
        return nodeid
    base = nodeid.split("[", 1)[0]
    if base in table:
        return base
    parts = base.split("::")
    for n in range(len(parts) - 1, 0, -1):
        prefix = "::".join(parts[:n])
        if prefix in table:
            return prefix
    return None


def pytest_addoption(parser):
    g = parser.getgroup("ringkv-compat")
    g.addoption("--compat-mode", default="plain", choices=MODES)
    g.addoption("--compat-selection", default=None)
    g.addoption("--compat-summary", default=None)
    g.addoption("--compat-record", default=None)


class _State:
    def __init__(self):
        self.outcomes = {}  # nodeid -> passed|failed|skipped
        self.skip_reasons = {}  # nodeid -> reason of a skip
        self.markers = {}  # nodeid -> names of its pytest markers
        self.unlisted = []
        self.stale = []
        self.current = None
        self.commands = {}  # nodeid -> set of command names (any phase)
        self.call_commands = {}  # nodeid -> set sent by the test body itself
        self.in_call = False


_state = _State()


def _record(args):
    if _state.current is None or not args:
        return
    try:
        first = args[0]
        if isinstance(first, str):
            first = first.encode()
        if isinstance(first, (bytes, bytearray, memoryview)):
            words = bytes(first).split()
        else:
            return
        rest = list(args[1:])
        name = words[0].upper()
        sub = None
        if name in _CONTAINERS:
            if len(words) > 1:
                sub = words[1]
            elif rest:
                sub = rest[0]
                if isinstance(sub, str):
                    sub = sub.encode()
                if not isinstance(sub, (bytes, bytearray)):
                    sub = None
        cmd = name.decode("latin-1")
        if sub is not None:
            cmd += " " + bytes(sub).upper().decode("latin-1")
        _state.commands.setdefault(_state.current, set()).add(cmd)
        if _state.in_call:
            _state.call_commands.setdefault(_state.current, set()).add(cmd)
    except Exception:  # recording must never break a test
        pass


def _install_recorder():
    import redis.connection as sync_conn

    for cls_name in ("PythonRespSerializer", "HiredisRespSerializer"):
        cls = getattr(sync_conn, cls_name, None)
        if cls is None:
            continue
        orig = cls.pack

        def pack(self, *args, _orig=orig):
            _record(args)
            return _orig(self, *args)

        cls.pack = pack
    try:
        import redis.asyncio.connection as async_conn
    except ImportError:
        return
    orig_async = async_conn.AbstractConnection.pack_command

    def pack_command(self, *args):
        _record(args)
        return orig_async(self, *args)

    async_conn.AbstractConnection.pack_command = pack_command


def _no_tracemalloc():
    """Make tracemalloc.start a no-op for this session.

    redis-py's conftest traces every allocation for the whole session
    (autouse enable_tracemalloc) only so that ResourceWarnings can say where
    an unclosed object was allocated; no test reads the traces. Tracing makes
    allocation-heavy client code ~8x slower, and a RedisCluster client builds
    its slot table from CLUSTER SLOTS on every initialisation: ringkv places
    each slot on its own (multi-probe hashing), so its CLUSTER SLOTS has some
    ten thousand ranges where Redis Cluster has a few, and with tracing each
    test's fixtures spent seconds in that loop.
    """
    import tracemalloc

    tracemalloc.start = lambda *args, **kwargs: None


def pytest_configure(config):
    if config.getoption("--compat-record"):
        _install_recorder()
    if config.getoption("--compat-mode") == "cluster":
        _no_tracemalloc()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """Hand the tests the client of --compat-mode (after redis-py's conftest
    has read the server's INFO into config.REDIS_INFO)."""
    config = session.config
    info = getattr(config, "REDIS_INFO", None)
    if info is None:
        return
    if config.getoption("--compat-mode") == "plain":
        # a cluster node reports cluster_enabled:1; the plain run is a plain
        # client on that one node (redis-py's conftest then builds
        # redis.Redis, and the onlycluster tests are skipped by the selection)
        info["cluster_enabled"] = False
    elif not info.get("cluster_enabled") and not config.option.collectonly:
        raise pytest.UsageError(
            "--compat-mode=cluster: the server at --redis-url reports cluster_enabled:0, "
            "so redis-py would not build cluster clients"
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    path = config.getoption("--compat-selection")
    if not path:
        return
    entries = parse_selection(path, config.getoption("--compat-mode"))
    table, markers = {}, {}
    for sign, entry, _, lineno in entries:
        if entry.startswith("@"):
            markers[entry[1:]] = (sign, entry)
        else:
            table[entry] = sign
    used = set()
    keep, drop = [], []
    for item in items:
        marked = [m for m in markers if item.get_closest_marker(m) is not None]
        if marked:
            # a marker entry wins: e.g. "- @onlycluster" on a single node
            sign, entry = markers[marked[0]]
            used.add(entry)
            (keep if sign == "+" else drop).append(item)
            continue
        key = _decide(item.nodeid, table)
        if key is None:
            _state.unlisted.append(item.nodeid)
            drop.append(item)
            continue
        used.add(key)
        (keep if table[key] == "+" else drop).append(item)
    collected_files = {item.nodeid.split("::", 1)[0] for item in items}
    for sign, entry, _, lineno in entries:
        if entry in used:
            continue
        # "-" entries of files compat/run does not collect are documentation
        if sign == "-" and entry.split("::", 1)[0] not in collected_files:
            continue
        _state.stale.append(f"line {lineno}: {sign} {entry}")
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _state.current = item.nodeid
    _state.markers[item.nodeid] = sorted({m.name for m in item.iter_markers()})
    yield
    _state.current = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _state.in_call = True
    yield
    _state.in_call = False


def pytest_runtest_logreport(report):
    prev = _state.outcomes.get(report.nodeid)
    if report.failed:
        # a failed setup/call/teardown fails the test (xfail strict included)
        new = "failed"
    elif report.skipped:
        # skipped in setup, or an expected failure (xfail)
        new = "skipped"
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            _state.skip_reasons[report.nodeid] = str(report.longrepr[2])
        elif hasattr(report, "wasxfail"):
            _state.skip_reasons[report.nodeid] = "xfail: " + str(report.wasxfail)
    elif report.when == "call":
        new = "passed"
    else:
        new = None
    if new is None:
        return
    order = {"passed": 0, "skipped": 1, "failed": 2}
    if prev is None or order[new] > order[prev]:
        _state.outcomes[report.nodeid] = new


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if _state.unlisted:
        tr.section("compat: collected tests missing from the selection file")
        for nodeid in _state.unlisted:
            tr.write_line(nodeid)
    if _state.stale:
        tr.section("compat: selection entries matching no collected test")
        for s in _state.stale:
            tr.write_line(s)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    out = config.getoption("--compat-summary")
    if out:
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for outcome in _state.outcomes.values():
            counts[outcome] += 1
        summary = dict(
            counts,
            failures=sorted(n for n, o in _state.outcomes.items() if o == "failed"),
            unlisted=_state.unlisted,
            stale=_state.stale,
            exitstatus=int(exitstatus),
        )
        with open(out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    rec = config.getoption("--compat-record")
    if rec:
        with open(rec, "w", encoding="utf-8") as f:
            for nodeid, outcome in _state.outcomes.items():
                f.write(json.dumps({
                    "nodeid": nodeid,
                    "outcome": outcome,
                    "commands": sorted(_state.commands.get(nodeid, ())),
                    "call_commands": sorted(_state.call_commands.get(nodeid, ())),
                    "skip_reason": _state.skip_reasons.get(nodeid),
                    "markers": _state.markers.get(nodeid, []),
                }) + "\n")
