"""Real programs that share memory through files, driven by tests/real_programs.rs.

  sqlite_writer DB WRITER ROWS   commit ROWS rows (one per transaction) as writer WRITER,
                                 printing each key once its COMMIT returned
  sqlite_victim DB WRITER ROWS   commit ROWS rows, then BEGIN IMMEDIATE, insert more rows
                                 (enough to spill into the WAL), print "mid" and wait to
                                 be killed
  sqlite_check DB                integrity_check, then every key, one per line
  sqlite_maintenance DIR         VACUUM (rollback and WAL), journal_mode=TRUNCATE and
                                 wal_checkpoint(TRUNCATE) on fresh databases in DIR
  numpy_w_plus PATH              numpy.memmap(mode='w+') over the existing PATH
  lmdb_grow DIR                  one process fills a 1 MiB map, grows it and writes on
  lmdb_join DIR                  a second process reads and writes the same environment
  lmdb_reopen_smaller DIR        reopens with writemap and a smaller map (a shrink)
Any failure raises: a traceback on stderr and exit status 1.
"""
import os
import sqlite3
import sys
import time


def connect(db):
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout=60000")
    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    con.execute(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, writer INT, pad BLOB)"
    )
    return con


def sqlite_writer(db, writer, rows):
    con = connect(db)
    for n in range(int(rows)):
        key = int(writer) * 1_000_000 + n
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t VALUES (?, ?, randomblob(300))", (key, int(writer)))
        con.execute("COMMIT")
        print(key, flush=True)
    con.close()


def sqlite_victim(db, writer, rows):
    con = connect(db)
    # A small page cache: the open transaction spills its pages into the WAL.
    con.execute("PRAGMA cache_size=10")
    for n in range(int(rows)):
        key = int(writer) * 1_000_000 + n
        con.execute("INSERT INTO t VALUES (?, ?, randomblob(300))", (key, int(writer)))
        print(key, flush=True)
    con.execute("BEGIN IMMEDIATE")
    for n in range(int(rows), int(rows) + 2000):
        key = int(writer) * 1_000_000 + n
        con.execute("INSERT INTO t VALUES (?, ?, randomblob(300))", (key, int(writer)))
    print("mid", flush=True)
    while True:
        time.sleep(1)


def sqlite_check(db):
    con = sqlite3.connect(db, timeout=60)
    ok = con.execute("PRAGMA integrity_check").fetchall()
    assert ok == [("ok",)], ok
    for (key,) in con.execute("SELECT id FROM t ORDER BY id"):
        print(key)
    con.close()


# 2,000 rows of 1,000 random bytes (generate_series is not in every SQLite build).
ROWS_2000 = (
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) "
    "INSERT INTO t SELECT randomblob(1000) FROM c"
)


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else -1


def sqlite_maintenance(d):
    # VACUUM in rollback mode truncates the database file itself.
    db = os.path.join(d, "vac.db")
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute(ROWS_2000)
    before = size(db)
    con.execute("DELETE FROM t WHERE rowid > 10")
    con.execute("VACUUM")
    after = size(db)
    assert after < before // 10, (before, after)
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    # VACUUM and a TRUNCATE checkpoint in WAL mode.
    db = os.path.join(d, "wal.db")
    con = sqlite3.connect(db, isolation_level=None)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute(ROWS_2000)
    con.execute("DELETE FROM t WHERE rowid > 10")
    con.execute("VACUUM")
    busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, busy
    assert size(db + "-wal") == 0, size(db + "-wal")
    assert size(db) < 100_000, size(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    # journal_mode=TRUNCATE cuts the journal to 0 at every commit.
    db = os.path.join(d, "trunc.db")
    con = sqlite3.connect(db, isolation_level=None)
    assert con.execute("PRAGMA journal_mode=TRUNCATE").fetchone()[0] == "truncate"
    con.execute("CREATE TABLE t (x INT)")
    for i in range(20):
        con.execute("INSERT INTO t VALUES (?)", (i,))
        assert size(db + "-journal") == 0, size(db + "-journal")
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 20
    con.close()
    print("ok")


def numpy_w_plus(path):
    import numpy

    assert os.path.getsize(path) > 4096
    m = numpy.memmap(path, mode="w+", dtype=numpy.uint8, shape=(4096,))
    assert not m.any(), "w+ starts from zeros"
    m[:] = 7
    m.flush()
    del m
    assert os.path.getsize(path) == 4096
    r = numpy.memmap(path, mode="r", dtype=numpy.uint8, shape=(4096,))
    assert (r == 7).all()
    print("ok")


def lmdb_grow(d):
    import lmdb

    env = lmdb.open(d, map_size=1 << 20, writemap=True)
    n = 0
    grown = False
    while n < 3000:
        try:
            with env.begin(write=True) as txn:
                txn.put(b"a%06d" % n, b"x" * 500)
            n += 1
        except lmdb.MapFullError:
            assert not grown
            env.set_mapsize(8 << 20)
            grown = True
    assert grown
    print("grown", flush=True)
    # Wait for the second process, then read what it wrote.
    sys.stdin.readline()
    with env.begin() as txn:
        for i in range(500):
            assert txn.get(b"b%06d" % i) == b"y" * 500, i
    env.close()
    print("ok", flush=True)


def lmdb_join(d):
    import lmdb

    env = lmdb.open(d, map_size=8 << 20, writemap=True)
    with env.begin() as txn:
        for i in range(3000):
            assert txn.get(b"a%06d" % i) == b"x" * 500, i
    for i in range(500):
        with env.begin(write=True) as txn:
            txn.put(b"b%06d" % i, b"y" * 500)
    env.close()
    print("ok")


def lmdb_reopen_smaller(d):
    import lmdb

    before = os.path.getsize(os.path.join(d, "data.mdb"))
    env = lmdb.open(d, map_size=6 << 20, writemap=True)
    after = os.path.getsize(os.path.join(d, "data.mdb"))
    assert after < before, (before, after)
    with env.begin() as txn:
        assert txn.stat()["entries"] == 3500
    env.close()
    print("ok")


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
