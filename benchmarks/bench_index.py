"""Clip cache index at scale: open a 1,000,000-video index (SQLite + memory-mapped extents, cache
format 2) in a fresh process and look videos up, against the format-1 index of the same records
(one JSON document loaded whole: its peer).

    python benchmarks/bench_index.py [--videos 1000000] [--quick]

No video is decoded: the benchmark writes a synthetic index directly (`videodata.cache.write_index`)
with fake but plausible records (101 classes, UCF-style relative paths, 8-32 cached frames per
video, 64 videos per shard) and real shard files whose frames are 1x1 pixels (the index and its
checks at open do not depend on the frame size; 1M videos at 64x64 would be ~400 GB). The format-1
`index.json` of the same records goes into the same folder, so both read the same shards.

Each side runs in a fresh Python process (the page cache cannot be dropped here: the files were
just written, so this is a warm-cache open): import, open (with every check the cache's `open`
makes), `len`, random `records[i]`, the labels, the positions of 10,000 relpaths, and the
`{r.relpath: i for i, r in enumerate(records)}` scan that callers build today. Peak RSS is the
`getrusage(RUSAGE_CHILDREN).ru_maxrss` of a bare launcher process whose only child it is (from
this process, which has torch imported, Linux would count the ~700 MB it had at fork); "after
open" is the child's own peak (VmHWM) right after the open. `run(args)` returns the numbers as data and
`section(...)` renders the RESULTS.md section.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from benchmarks.common import busy_note, fmt_num, fmt_ratio, md_table, notes, ratio, stamp
from runkit.cli import ArgumentParser
from videodata.cache import EXTENT_DTYPE, FORMAT, INDEX_NAME, write_index

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADING = "Clip cache index"
CLASSES = 101
VIDEOS_PER_SHARD = 64
OLD_FORMAT = "vganbench.clipcache/1"

# A slim process that starts the measured one and reports getrusage(RUSAGE_CHILDREN).ru_maxrss.
# Not measured from this process: on Linux a child's ru_maxrss starts from its parent's peak at
# fork (this process has torch imported: ~700 MB), whereas the launcher is a bare interpreter.
LAUNCHER = r'''
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
print(json.dumps({"returncode": proc.returncode, "process_s": wall,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
sys.exit(proc.returncode)
'''

# What each fresh process runs: argv = kind, cache folder, queries file. Prints one JSON line.
CHILD = r'''
import json, resource, sys, time
kind, folder, queries = sys.argv[1], sys.argv[2], sys.argv[3]


def rss():
    """Peak RSS of this process image so far, MB: VmHWM (ru_maxrss would include the parent's
    pages from before exec on Linux)."""
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
    except OSError:  # no /proc (not Linux): ru_maxrss is the fallback
        lines = []
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


out = {"kind": kind}
t = time.perf_counter()
import numpy as np
if kind == "baseline":
    import videodata.cache
    out.update(import_s=time.perf_counter() - t, rss_after_open_mb=rss())
    print(json.dumps(out)); sys.exit(0)
if kind == "ours":
    from videodata.cache import ClipCache
else:
    from pathlib import Path
    from videodata.errors import VideoDataError
    from videodata.records import VideoRecord

    def json_open(folder):
        """Format 1's ClipCache.open + __init__ (git history), as the peer."""
        folder = Path(folder)
        index_path = folder / "index.json"
        index = json.loads(index_path.read_text())
        if index.get("format") != "vganbench.clipcache/1":
            raise VideoDataError(f"{index_path}: format {index.get('format')!r}")
        h, w = index["params"]["size"]
        lengths = {}
        for shard in range(index["num_shards"]):
            npy = folder / f"shard_{shard:05d}.npy"
            arr = np.load(npy, mmap_mode="r")
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
                raise VideoDataError(f"{npy}: shard holds {arr.dtype} {arr.shape}")
            lengths[shard] = arr.shape[0]
        for entry in index["videos"]:
            end = entry["offset"] + entry["frames"]
            if entry["frames"] < 1 or end > lengths.get(entry["shard"], -1):
                raise VideoDataError(f"{index_path}: entry for {entry['path']} points past the end")
        records = [VideoRecord(path=e["path"], relpath=e["relpath"], label=e["label"],
                               class_name=e["class_name"], group=e["group"], clip=e["clip"])
                   for e in index["videos"]]
        return index, records
out["import_s"] = time.perf_counter() - t
q = json.loads(open(queries).read())
t = time.perf_counter()
if kind == "ours":
    cache = ClipCache.open(folder)
    records = cache.records
else:
    index, records = json_open(folder)
out["open_s"] = time.perf_counter() - t
out["rss_after_open_mb"] = rss()
t = time.perf_counter()
n = len(cache) if kind == "ours" else len(index["videos"])
out["len_s"] = time.perf_counter() - t
out["videos"] = n
t = time.perf_counter()
got = [records[i] for i in q["lookups"]]
out["lookups_s"] = time.perf_counter() - t
assert [r.relpath for r in got[:50]] == q["lookup_relpaths"][:50], "records[i] gave another video"
t = time.perf_counter()
labels = cache.labels if kind == "ours" else np.array([r.label for r in records], dtype=np.int64)
out["labels_s"] = time.perf_counter() - t
assert labels.shape == (n,) and labels.dtype == np.int64
t = time.perf_counter()
if kind == "ours":
    positions = cache.index_of(q["relpaths"])
else:  # what callers do with a list of records (transfer/sweeps/cells.py `_indices`)
    where = {r.relpath: i for i, r in enumerate(records)}
    positions = np.array([where[r] for r in q["relpaths"]], dtype=np.int64)
out["index_of_s"] = time.perf_counter() - t
assert positions.tolist() == q["positions"], "index_of gave wrong positions"
out["rss_before_scan_mb"] = rss()
t = time.perf_counter()
where = {r.relpath: i for i, r in enumerate(records)}
out["scan_s"] = time.perf_counter() - t
assert len(where) == n
print(json.dumps(out))
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=common.prog(__file__), description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=None,
                        help="videos in the synthetic index (default 1,000,000; --quick 100,000)")
    parser.add_argument("--lookups", type=int, default=10_000, help="random records[i] lookups")
    parser.add_argument("--relpaths", type=int, default=10_000, help="relpaths given to index_of")
    parser.add_argument("--no-peer", dest="peer", action="store_false",
                        help="skip the format-1 JSON peer (its process needs several GB at 1M videos)")
    parser.add_argument("--scratch", default=None, help="folder for the synthetic cache (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="100,000 videos (a smoke run)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.videos is None:
        args.videos = 100_000 if args.quick else 1_000_000
    if args.videos < 1 or args.lookups < 1 or args.relpaths < 1:
        parser.error("--videos, --lookups and --relpaths must be >= 1")
    return args


def _command(args) -> str:
    flags = ["--quick"] if args.quick else []
    if args.videos != (100_000 if args.quick else 1_000_000):
        flags += ["--videos", str(args.videos)]
    for name, default in (("lookups", 10_000), ("relpaths", 10_000)):
        if getattr(args, name) != default:
            flags += [f"--{name}", str(getattr(args, name))]
    if not args.peer:
        flags.append("--no-peer")
    return " ".join(["python benchmarks/bench_index.py", *flags])


# ---------------------------------------------------------------------------- synthetic index
class FakeVideos:
    """n plausible records: class c = i % 101, UCF-style names, sizes and mtimes; 8-32 frames."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n = n
        self.classes = [f"Action{c:03d}" for c in range(CLASSES)]
        self.labels = np.arange(n, dtype=np.int64) % CLASSES
        self.groups = rng.integers(1, 26, n)
        self.sizes = rng.integers(100_000, 3_000_000, n)
        self.mtimes = 1_700_000_000_000_000_000 + rng.integers(0, 10**16, n)
        self.frames = rng.integers(8, 33, n).astype(np.int32)
        self.fps = rng.choice(np.array([25.0, 29.97, 30.0]), n)
        self.shards = (np.arange(n) // VIDEOS_PER_SHARD).astype(np.int32)
        self.num_shards = int(self.shards[-1]) + 1
        starts = np.arange(0, n, VIDEOS_PER_SHARD)
        cum = np.cumsum(self.frames, dtype=np.int64) - self.frames
        self.offsets = cum - cum[starts][self.shards]
        self.shard_frames = np.add.reduceat(self.frames.astype(np.int64), starts)

    def relpath(self, i: int) -> str:
        name = self.classes[int(self.labels[i])]
        return f"{name}/v_{name}_g{int(self.groups[i]):02d}_c{i:07d}.avi"

    def rows(self):
        for i in range(self.n):
            rel = self.relpath(i)
            yield (f"/data/videos/{rel}", rel, int(self.labels[i]), self.classes[int(self.labels[i])],
                   int(self.groups[i]), i, int(self.sizes[i]), int(self.mtimes[i]))

    def extents(self) -> np.ndarray:
        ext = np.empty(self.n, EXTENT_DTYPE)
        ext["shard"], ext["offset"], ext["frames"] = self.shards, self.offsets, self.frames
        ext["fps"], ext["label"] = self.fps, self.labels
        return ext


def write_shards(folder: Path, fake: FakeVideos) -> None:
    """Real .npy shards of 1x1 frames with the extents' lengths (what the index checks at open)."""
    biggest = np.zeros((int(fake.shard_frames.max()), 1, 1, 3), np.uint8)
    for shard, frames in enumerate(fake.shard_frames):
        np.save(folder / f"shard_{shard:05d}.npy", biggest[:int(frames)], allow_pickle=False)


def write_json_index(path: Path, fake: FakeVideos, fingerprint: str, params: dict) -> None:
    """Format 1's index.json, byte for byte as its build wrote it (json, sort_keys), streamed."""
    head = json.dumps({"format": OLD_FORMAT, "fingerprint": fingerprint, "num_shards": fake.num_shards,
                       "params": params, "videos": []}, sort_keys=True)
    before, after = head.split('"videos": []')
    with open(path, "w") as out:
        out.write(before + '"videos": [')
        for i, (path_, rel, label, cls, group, clip, size, mtime) in enumerate(fake.rows()):
            entry = {"path": path_, "relpath": rel, "label": label, "class_name": cls, "group": group,
                     "clip": clip, "size_bytes": size, "mtime_ns": mtime, "shard": int(fake.shards[i]),
                     "offset": int(fake.offsets[i]), "frames": int(fake.frames[i]), "fps": float(fake.fps[i])}
            out.write((", " if i else "") + json.dumps(entry, sort_keys=True))
        out.write("]" + after + "\n")


def measure_child(kind: str, folder: Path, queries: Path) -> dict:
    """Run CHILD in a fresh interpreter (started by LAUNCHER): its numbers, its wall time from
    start to exit and its peak RSS (the launcher's `getrusage(RUSAGE_CHILDREN).ru_maxrss`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-c", CHILD, kind, str(folder),
                           str(queries)], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_index child {kind!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    *_, child, launcher = proc.stdout.strip().splitlines()
    result = json.loads(child)
    launcher = json.loads(launcher)
    result.update(process_s=launcher["process_s"], peak_rss_mb=launcher["peak_rss_mb"])
    return result


def run(args) -> dict:
    """Write the synthetic index (both formats), then measure each in a fresh process."""
    n = args.videos
    result: dict = {"stage": "index", "command": _command(args), "quick": args.quick, "videos": n,
                    "videos_per_shard": VIDEOS_PER_SHARD, "format": FORMAT, "peer_format": OLD_FORMAT}
    with tempfile.TemporaryDirectory(prefix="bench_index_", dir=args.scratch) as scratch:
        folder = Path(scratch) / "cache"
        folder.mkdir()
        fake = FakeVideos(n)
        result["shards"] = fake.num_shards
        params = {"size": [1, 1], "max_frames": 32, "stride": 1, "resize": "crop",
                  "videos_per_shard": VIDEOS_PER_SHARD}
        fingerprint = f"bench{n:011d}"
        print(f"index: writing {n:,} videos in {fake.num_shards:,} shards under {folder}", file=sys.stderr)
        start = time.perf_counter()
        write_shards(folder, fake)
        result["shards_write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        write_index(folder, fingerprint=fingerprint, params=params, num_shards=fake.num_shards,
                    rows=fake.rows(), extents=fake.extents())
        result["write_s"] = time.perf_counter() - start
        result["bytes"] = (folder / INDEX_NAME).stat().st_size + (folder / "extents.npy").stat().st_size
        if args.peer:
            start = time.perf_counter()
            write_json_index(folder / "index.json", fake, fingerprint, params)
            result["peer_write_s"] = time.perf_counter() - start
            result["peer_bytes"] = (folder / "index.json").stat().st_size

        rng = np.random.default_rng(1)
        lookups = rng.integers(0, n, args.lookups).tolist()
        positions = rng.permutation(n)[:min(args.relpaths, n)].tolist()
        queries = Path(scratch) / "queries.json"
        queries.write_text(json.dumps({"lookups": lookups, "lookup_relpaths": [fake.relpath(i) for i in lookups],
                                       "relpaths": [fake.relpath(i) for i in positions],
                                       "positions": positions}))
        result["lookups"], result["relpaths"] = len(lookups), len(positions)
        print("index: measuring (fresh processes)", file=sys.stderr)
        result["baseline"] = measure_child("baseline", folder, queries)
        result["ours"] = measure_child("ours", folder, queries)
        result["peer"] = measure_child("peer", folder, queries) if args.peer else None
    ours, peer = result["ours"], result["peer"]
    result["open_vs_peer"] = ratio(peer["open_s"], ours["open_s"]) if peer else None  # > 1: ours faster
    result["rss_vs_peer"] = ratio(peer["rss_after_open_mb"], ours["rss_after_open_mb"]) if peer else None
    return result


ROWS = (  # key, what, unit scale
    ("open_s", "`ClipCache.open` (format 1: `json.loads` + checks + `VideoRecord` list)", "s"),
    ("len_s", "`len(cache)`", "us"),
    ("lookups_s", "random `records[i]`, per lookup", "us/lookup"),
    ("labels_s", "`cache.labels` (format 1: `[r.label for r in records]`)", "s"),
    ("index_of_s", "`cache.index_of(relpaths)` (format 1: dict of every relpath, then look up)", "s"),
    ("scan_s", "`{r.relpath: i for i, r in enumerate(records)}` (callers' pattern today)", "s"),
)


def _value(side: dict, key: str, unit: str, result: dict) -> float:
    value = side[key]
    if unit == "us":
        return value * 1e6
    if unit == "us/lookup":
        return value / result["lookups"] * 1e6
    return value


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## Clip cache index" section of RESULTS.md, from `run`'s result."""
    ours, peer, base = result["ours"], result["peer"], result["baseline"]
    rows = []
    for key, what, unit in ROWS:
        mine = _value(ours, key, unit, result)
        theirs = _value(peer, key, unit, result) if peer else None
        rows.append((what, unit, fmt_num(mine), fmt_num(theirs),
                     fmt_ratio(ratio(theirs, mine)) if peer else "n/a"))
    mem = [("peak RSS right after open", "MB", fmt_num(ours["rss_after_open_mb"]),
            fmt_num(peer["rss_after_open_mb"]) if peer else "-", fmt_ratio(result["rss_vs_peer"])),
           ("peak RSS of the whole process (after the scan too)", "MB", fmt_num(ours["peak_rss_mb"]),
            fmt_num(peer["peak_rss_mb"]) if peer else "-",
            fmt_ratio(ratio(peer["peak_rss_mb"], ours["peak_rss_mb"])) if peer else "n/a"),
           ("fresh process, start to exit (all of the above)", "s", fmt_num(ours["process_s"]),
            fmt_num(peer["process_s"]) if peer else "-",
            fmt_ratio(ratio(peer["process_s"], ours["process_s"])) if peer else "n/a"),
           ("index on disk", "MB", fmt_num(result["bytes"] / 1e6),
            fmt_num(result["peer_bytes"] / 1e6) if peer else "-",
            fmt_ratio(ratio(result["peer_bytes"], result["bytes"])) if peer else "n/a"),
           ("writing the index (`write_index` / streamed JSON)", "s", fmt_num(result["write_s"]),
            fmt_num(result["peer_write_s"]) if peer else "-",
            fmt_ratio(ratio(result["peer_write_s"], result["write_s"])) if peer else "n/a")]
    table = md_table([f"{result['videos']:,} videos, {result['shards']:,} shards", "unit",
                      f"ours ({result['format']})", f"peer ({result['peer_format']}, JSON)",
                      "ours/peer (speed or 1/size)"], rows + mem)
    found = [
        f"Opening {result['videos']:,} videos took {fmt_num(ours['open_s'])} s and left the process at "
        f"{fmt_num(ours['rss_after_open_mb'])} MB peak RSS, of which {fmt_num(base['rss_after_open_mb'])} MB "
        f"is the interpreter with `videodata.cache` imported (no torch, no PyAV: "
        f"{fmt_num(base['import_s'])} s to import)."
        + (f" The JSON peer took {fmt_num(peer['open_s'])} s and {fmt_num(peer['rss_after_open_mb'])} MB."
           if peer else " The JSON peer was not run (--no-peer)."),
        f"`records[i]` reads one SQLite row ({fmt_num(ours['lookups_s'] / result['lookups'] * 1e6)} us); "
        f"a scan over all records streams them in chunks. `index_of` ({result['relpaths']:,} relpaths) "
        f"uses the relpath index instead of a dict of every video.",
        "Warm page cache: the files were written just before (the page cache cannot be dropped here); "
        "a cold open also reads one .npy header per shard and the extents' pages.",
        busy_note(info, load_end),
    ]
    return common.section(
        HEADING,
        f"`{result['command']}`.",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"A synthetic index of {result['videos']:,} videos ({result['videos_per_shard']} per shard, 1x1-pixel "
        f"frames: the open does not depend on the frame size), opened in a fresh process; "
        f"{result['lookups']:,} random lookups.",
        table,
        notes(found))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
