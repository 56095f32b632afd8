# Two unlocked writers: A's post-commit tidy deletes B's freshly written (not yet committed) checkpoint.
import os, sys, shutil, time, threading
sys.path.insert(0, "/tmp/review-index")
from common import *
from byakugan.index import committed, db
p = "/tmp/review-index/race_tidy"; shutil.rmtree(p, ignore_errors=True)
g = Gallery.create(settings(), p); g.enroll("a", vecs(range(10))); g.enroll("b", vecs(range(10, 20))); g.enroll("c", vecs(range(20, 30)))
g.reindex("HNSW8"); g.save()
A = Gallery.open(p)
A.remove("a")              # HNSW removal -> new checkpoint on save
real_tidy = db.tidy
def slow_tidy(directory, remove):
    # what another process does in the gap between A's COMMIT and A's clean-up
    db.tidy = real_tidy
    B = Gallery.open(p)    # sees A's commit
    B.remove("b")          # writes index.<gen+1>.faiss, commits it... but run B's save only up to its file write:
    orig_write = db.write_atomic
    def write_then_let_A_tidy(path, blob, *a, **k):
        out = orig_write(path, blob, *a, **k)
        remove()           # A's tidy runs now (A is another process; it is not holding SQLite's lock)
        return out
    db.write_atomic = write_then_let_A_tidy
    B.save()
    db.write_atomic = orig_write
db.tidy = slow_tidy
A.save()
print(sorted(os.listdir(p)))
try:
    g = Gallery.open(p); print("opened", g.labels())
except Exception as e:
    print(type(e).__name__, e)
