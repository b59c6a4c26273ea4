"""``fakewatch scan`` over real and fake videos, tallied per family: how many videos get a ``fake`` verdict.

    .venv/bin/python benchmarks/scan_fakes_dev.py [--bundle DIR] [--out runs/scan-fakes-dev]

Inputs: every video of ``../shared/data/fakes_dev`` (labels.csv: the fake families and GHOST's real clip)
and every real video of ``../shared/data/videos``. A video counts as flagged when any of its tracks ends
with verdict ``fake``. The side-by-side DeepFaceLive clips hold a real face (left) and its swap (right):
"flagged" there means at least one track became fake, which need not be the swapped one, so those clips
are also reported with the number of fake and non-fake tracks. Validation only: nothing here is trained on.
Writes ``summary.json`` and ``summary.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _videos() -> list[tuple[Path, str, str]]:
    """(path, label, family) of every input video."""
    out = []
    fd = SHARED / "fakes_dev"
    with open(fd / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["kind"] == "video":
                out.append((fd / r["path"], r["label"], r["family"] if r["label"] == "fake" else f"real ({r['family']})"))
    for p in sorted((SHARED / "videos").rglob("*.mp4")):
        out.append((p, "real", f"real (shared/{p.parent.name})"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="bundle folder (default: the shipped default bundle)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "scan-fakes-dev")
    ap.add_argument("--batch", type=int, default=8, help="videos per scan call")
    a = ap.parse_args(argv)
    if not (SHARED / "fakes_dev" / "labels.csv").is_file():
        print(f"{SHARED / 'fakes_dev'}: not present", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    vids = _videos()
    per_video: dict[str, dict] = {}
    t0 = time.time()
    for i in range(0, len(vids), a.batch):
        chunk = vids[i:i + a.batch]
        jl = a.out / f"events-{i // a.batch:03d}.jsonl"
        cmd = [str(REPO / ".venv" / "bin" / "fakewatch"), "scan", *[str(p) for p, _, _ in chunk], "--jsonl", str(jl)]
        if a.bundle:
            cmd += ["--bundle", a.bundle]
        res = subprocess.run(cmd, capture_output=True, text=True)
        ends: dict[str, list[str]] = {}
        if jl.is_file():
            for line in jl.read_text().splitlines():
                e = json.loads(line)
                if e.get("event") == "end":
                    ends.setdefault(e["stream_id"], []).append(e["verdict"])
        ids = sorted(ends)
        for p, label, fam in chunk:
            sid = next((s for s in ids if Path(p).stem in s), None)
            v = ends.get(sid, []) if sid else []
            per_video[str(p)] = {"label": label, "family": fam, "verdicts": v, "flagged": "fake" in v,
                                 "scan_rc": res.returncode}
        print(f"{min(i + a.batch, len(vids))}/{len(vids)} videos, {time.time() - t0:.0f} s", flush=True)
    fams: dict[str, dict] = {}
    for v in per_video.values():
        f = fams.setdefault(v["family"], {"label": v["label"], "videos": 0, "flagged": 0, "no_track": 0,
                                          "fake_tracks": 0, "other_tracks": 0})
        f["videos"] += 1
        f["flagged"] += int(v["flagged"])
        f["no_track"] += int(not v["verdicts"])
        f["fake_tracks"] += sum(x == "fake" for x in v["verdicts"])
        f["other_tracks"] += sum(x != "fake" for x in v["verdicts"])
    lines = ["| family | label | videos | flagged fake | share | no track | fake tracks | other tracks |",
             "|---|---|---|---|---|---|---|---|"]
    for k, f in sorted(fams.items(), key=lambda kv: (kv[1]["label"], kv[0])):
        lines.append(f"| {k} | {f['label']} | {f['videos']} | {f['flagged']} | {f['flagged'] / f['videos']:.2f} | "
                     f"{f['no_track']} | {f['fake_tracks']} | {f['other_tracks']} |")
    fake = [v for v in per_video.values() if v["label"] == "fake"]
    real = [v for v in per_video.values() if v["label"] == "real"]
    lines += ["", f"fake videos flagged: {sum(v['flagged'] for v in fake)} of {len(fake)}; "
                  f"real videos flagged: {sum(v['flagged'] for v in real)} of {len(real)}; "
                  f"bundle: {a.bundle or 'default'}; {time.time() - t0:.0f} s"]
    (a.out / "summary.json").write_text(json.dumps({"families": fams, "videos": per_video}, indent=1))
    (a.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
