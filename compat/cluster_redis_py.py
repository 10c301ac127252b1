"""redis-py's RedisCluster client against the ringkv 3-node cluster.

Run by compat/run (cluster target) with the compat venv's python:
    python cluster_redis_py.py HOST PORT1 PORT2 PORT3
Prints one line per check, "ok NAME" or "FAIL NAME: detail" (detail on one
line), and exits 0 whatever the outcome; compat/run counts the lines.
"""

import sys
import traceback

import redis
from redis.cluster import ClusterNode, RedisCluster

HOST = sys.argv[1]
PORTS = [int(p) for p in sys.argv[2:5]]


def one_line(s):
    return " | ".join(str(s).splitlines())[:1500]


def report(name, ok, detail=""):
    print(f"ok {name}" if ok else f"FAIL {name}: {one_line(detail)}", flush=True)


def run(name, fn):
    try:
        res = fn()
    except Exception as e:  # a check failing must not stop the others
        report(name, False, f"{type(e).__name__}: {e} -- {traceback.format_exc(limit=3)}")
        return None
    if res is True or res is None:
        report(name, True)
    else:
        report(name, False, res)
    return res


def main():
    plain = [redis.Redis(host=HOST, port=p, socket_timeout=30) for p in PORTS]
    plain[0].flushall()
    state = {}

    def init():
        rc = RedisCluster(startup_nodes=[ClusterNode(HOST, p) for p in PORTS],
                          socket_timeout=30)
        state["rc"] = rc
        got = sorted(n.port for n in rc.get_primaries() + rc.get_replicas())
        if got != sorted(PORTS):
            return f"nodes seen by RedisCluster: {got}, expected {sorted(PORTS)}"
        return True

    if run("redis-cluster.init", init) is not True or "rc" not in state:
        # the raw replies RedisCluster initialises from, for the report
        for cmd in (("CLUSTER", "SLOTS"), ("CLUSTER", "NODES")):
            try:
                r = plain[0].execute_command(*cmd)
                print(f"  {' '.join(cmd)} (first 600 chars): {one_line(repr(r)[:600])}")
            except Exception as e:
                print(f"  {' '.join(cmd)}: {type(e).__name__}: {e}")
        for name in ("set-get-200", "every-node-reads-200", "mset-nonatomic", "mget-nonatomic",
                     "delete-200", "hash-tag-mget", "slot-owner-matches", "pipeline-200"):
            report(f"redis-cluster.{name}", False, "RedisCluster did not initialise")
        return
    rc = state["rc"]
    keys = [f"rc:key:{i}" for i in range(200)]

    def set_get():
        for i, k in enumerate(keys):
            if rc.set(k, f"val{i}") is not True:
                return f"SET {k} did not return True"
        bad = [k for i, k in enumerate(keys) if rc.get(k) != f"val{i}".encode()]
        return f"{len(bad)} keys read back wrong, e.g. {bad[:3]}" if bad else True

    def every_node():
        bad = []
        for p, c in zip(PORTS, plain):
            for i, k in enumerate(keys):
                v = c.get(k)
                if v != f"val{i}".encode():
                    bad.append((p, k, v))
        return f"{len(bad)} (port, key, value) wrong, e.g. {bad[:3]}" if bad else True

    mkeys = {f"rc:m:{i}": f"mv{i}" for i in range(200)}

    def mset():
        r = rc.mset_nonatomic(mkeys)
        if not r:
            return f"mset_nonatomic returned {r!r}"
        bad = [(p, k) for p, c in zip(PORTS, plain) for k, v in mkeys.items()
               if c.get(k) != v.encode()]
        return f"{len(bad)} (port, key) not readable through plain clients, e.g. {bad[:3]}" if bad else True

    def mget():
        ks = list(mkeys) + ["rc:m:missing"]
        got = rc.mget_nonatomic(ks)
        want = [v.encode() for v in mkeys.values()] + [None]
        if got != want:
            diff = [(k, g, w) for k, g, w in zip(ks, got, want) if g != w]
            return f"{len(diff)} wrong, e.g. {diff[:3]}"
        return True

    def hash_tag():
        rc.set("{user1000}.following", "a")
        rc.set("{user1000}.followers", "b")
        got = rc.mget("{user1000}.following", "{user1000}.followers")
        return True if got == [b"a", b"b"] else f"MGET same-slot keys: {got!r}"

    def slot_owner():
        # the node RedisCluster routes a key to lists every node for its slot
        bad = []
        for k in keys[:20]:
            slot = rc.keyslot(k)
            srv = plain[1].execute_command("CLUSTER", "KEYSLOT", k)
            if int(srv) != slot:
                bad.append((k, slot, srv))
        return f"client vs server KEYSLOT differ: {bad[:3]}" if bad else True

    def pipeline():
        # RedisCluster's pipeline groups commands by node and sends each group at once
        pipe = rc.pipeline()
        for i in range(100):
            pipe.set(f"rc:pl:{i}", f"p{i}")
        for i in range(100):
            pipe.get(f"rc:pl:{i}")
        replies = pipe.execute()
        want = [True] * 100 + [f"p{i}".encode() for i in range(100)]
        if replies != want:
            diff = [(i, g, w) for i, (g, w) in enumerate(zip(replies, want)) if g != w]
            return f"{len(diff)} pipeline replies wrong, e.g. {diff[:3]}"
        return True

    def delete():
        n = sum(rc.delete(k) for k in keys)
        left = [(p, k) for p, c in zip(PORTS, plain) for k in keys if c.exists(k)]
        if n != len(keys) or left:
            return f"deleted {n} of {len(keys)}; still there: {left[:3]}"
        return True

    run("redis-cluster.set-get-200", set_get)
    run("redis-cluster.every-node-reads-200", every_node)
    run("redis-cluster.mset-nonatomic", mset)
    run("redis-cluster.mget-nonatomic", mget)
    run("redis-cluster.hash-tag-mget", hash_tag)
    run("redis-cluster.slot-owner-matches", slot_owner)
    run("redis-cluster.pipeline-200", pipeline)
    run("redis-cluster.delete-200", delete)
    rc.close()


if __name__ == "__main__":
    main()
