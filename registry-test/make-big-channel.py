#!/usr/bin/env python3
"""Makes a conda channel with real-sized repodata out of a small test channel.

usage: make-big-channel.py SRC_CHANNEL DEST --records N [--seed S] [--force] [--zstd-level L]

Why: a benchmark compares pulling an image against installing a conda environment at container start
(py-rattler's solve + install from a channel served by `python3 -m http.server`). Fetching and parsing
a channel's repodata is part of what such an install really costs, and a real channel's repodata is
big (conda-forge linux-64: hundreds of thousands of records; a private mirror: ~20k records, ~2 MB of
repodata.json.zst), while the fixture channel holds ~18 records. DEST is the fixture channel plus
about N records of realistic filler, so the install side of the benchmark pays a realistic repodata cost
and still installs exactly the same packages.

What it writes:
- DEST/linux-64 and DEST/noarch (and any other subdir SRC has). Every package file of SRC (*.conda,
  *.tar.bz2) is hard-linked into DEST (copied only when linking fails, e.g. across file systems).
  SRC is only read.
- DEST/<subdir>/repodata.json: SRC's top-level keys ("info", "repodata_version", ...) and all of its
  records, unchanged, in the same sections ("packages" for .tar.bz2, "packages.conda" for .conda), plus
  filler records so that the total is N (~70% linux-64, 30% noarch; if SRC alone has N, no filler).
  The files of filler records do not exist: the solver must never choose them, which is why:
  * filler records for a name SRC has (older flask, requests, python 3.8-3.10, ...) always have a
    version strictly lower than every version SRC has for that name, and stay in that name's subdir.
    With "highest version" solving, the newest (real) records are chosen whenever they satisfy the
    specs, and they do, since they are the solution against SRC. python's filler is 3.7.x-3.11.x below
    SRC's lowest python (no 3.12+), so "python=3.11" still resolves to SRC's file;
  * filler names never equal a name SRC has, and no record of SRC depends on a filler name;
    so a solve that succeeds against SRC gives the same records against DEST.
  Filler is shaped like conda-forge's: names from a word list made from fixed morphemes and
  pseudo-words ("py"/"lib"/"r-"/"perl-" prefixes, "-cpp"/"-tools"/... suffixes); 1-30 versions per
  name; builds like "py311h1234abc_0" (one per python), "pyhd8ed1ab_0", "h5eee18b_1",
  "r43hc72bb7e_0"; depends on core libraries (libgcc-ng, libzlib, openssl, python_abi, r-base, perl),
  on earlier filler names with run-export-like pins, and on SRC's names (python >=3.8, requests >=...);
  constrains on some; license, license_family, md5, sha256 (random hex), size, timestamp (ms),
  build_number, arch/platform (linux-64), "noarch": "python"/"generic"; older records as .tar.bz2.
- DEST/<subdir>/repodata.json.zst (`zstd -19 -q`; --zstd-level to change). No repodata_shards or
  shards/: clients then fetch repodata.json(.zst), as most private mirrors serve it.

Deterministic: one random.Random(seed), no iteration over sets, sorted keys, compact JSON (as
rattler-index writes it): the same arguments give the same bytes (and the same zstd version). About
6 s for N=20000 on a loaded 2-core VM, ~0.6 s of it Python and the rest zstd -19 (the two subdirs are
compressed in parallel); zstd -19 grows linearly: N=100000 takes ~1 min (--zstd-level 10 is far quicker).

Prints one line of JSON: records per subdir (total, real, filler), repodata.json and .zst sizes, files
linked/copied, seconds.

DEST must not exist or be empty; --force replaces DEST/<subdir> directories (and nothing else)."""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

SUBDIRS = ("linux-64", "noarch")
LINUX_SHARE = 0.7
PKG_EXTS = (".conda", ".tar.bz2")
CONDA_ERA_MS = 1669852800000  # 2022-12-01: conda-forge's switch to .conda
T_START_MS = 1483228800000  # 2017-01-01
T_END_MS = 1748736000000  # 2025-06-01
DAY_MS = 86400000
PYTHONS = ((3, 8), (3, 9), (3, 10), (3, 11), (3, 12), (3, 13))
LICENSES = (("MIT", "MIT"), ("BSD-3-Clause", "BSD"), ("Apache-2.0", "APACHE"), ("BSD-2-Clause", "BSD"),
            ("GPL-3.0-or-later", "GPL3"), ("GPL-2.0-or-later", "GPL2"), ("LGPL-2.1-or-later", "LGPL"),
            ("MPL-2.0", "MOZILLA"), ("ISC", "OTHER"), ("Zlib", "OTHER"), ("PSF-2.0", "PSF"),
            ("MIT", "MIT"), ("BSD-3-Clause", "BSD"), ("Apache-2.0", "APACHE"))
MORPHEMES = """
json yaml toml xml html css http url net web socket async io stream pipe queue cache store db sql
graph tree node mesh grid geo map tile raster vector tensor array frame table column sparse dense
stat stats prob fit model learn train infer plot chart viz draw canvas image pixel color font glyph
text token parse lex regex diff patch merge sync lock thread proc task job flow dag sched cron time
date clock zone calendar unit measure signal audio video codec media wave spectra filter kernel
crypt hash sign cert key auth oauth token vault secret user role policy rule check lint test mock
fake fixture bench prof trace log metric event alert notify mail chat bot cli term shell prompt tty
color rich pretty print format dump load pack zip gzip lz bz xz zstd snap arch tar blob object bucket
cloud aws azure gcs s3 k8s dock pod mesh proxy gate route rpc rest grpc proto schema valid conf
config env dot path file dir glob watch fs disk mem mmap buf ring heap sort search index rank match
fuzzy phon lang nlp spell word sent topic embed bio gene seq prot chem mol atom quantum astro sky
star orbit climate ocean soil crop med scan dicom fhir fin money price trade order ledger bank risk
opt solve lp mip sat smt sym alg calc math num float decimal rand noise jit cuda gpu simd blas lapack
fft ode pde sim agent env game robot ros lidar camera vision face pose track align warp morph
""".split()
PY_PREFIXES = (("", 40), ("py", 14), ("python-", 6), ("pytest-", 8), ("sphinx-", 4), ("django-", 5),
               ("flask-", 3), ("jupyter-", 3), ("types-", 4), ("mkdocs-", 2), ("napari-", 1))
PY_SUFFIXES = (("", 50), ("-core", 5), ("-utils", 5), ("-tools", 4), ("kit", 3), ("lib", 3), ("py", 3),
               ("-client", 3), ("-plugin", 2), ("-extra", 1), ("-api", 2), ("-sdk", 1), ("x", 2), ("ify", 1))
C_SUFFIXES = (("", 50), ("-cpp", 8), ("-c", 3), ("-tools", 4), ("-devel", 2), ("-static", 2), ("-bin", 3),
              ("-headers", 2), ("-dev", 2), ("2", 2), ("3", 2))
# category: (subdir, weight within its subdir)
CATEGORIES = {"clib": ("linux-64", 45), "pyext": ("linux-64", 30), "rext": ("linux-64", 15),
              "perl": ("linux-64", 10), "pynoarch": ("noarch", 75), "rnoarch": ("noarch", 20),
              "generic": ("noarch", 5)}
GROUP = {"clib": "c", "pyext": "py", "pynoarch": "py", "rext": "r", "rnoarch": "r", "perl": "perl",
         "generic": "generic"}
# Core filler: (name, category, versions). Depended on by the rest of the filler.
CORE = (
    ("libgcc-ng", "clib", "11.2.0 12.3.0 13.1.0 13.2.0 14.1.0 14.2.0"),
    ("libstdcxx-ng", "clib", "11.2.0 12.3.0 13.1.0 13.2.0 14.1.0 14.2.0"),
    ("libgomp", "clib", "11.2.0 12.3.0 13.2.0 14.1.0 14.2.0"),
    ("libzlib", "clib", "1.2.13 1.3.1"), ("zlib", "clib", "1.2.13 1.3.1"),
    ("openssl", "clib", "3.0.8 3.0.12 3.1.1 3.1.4 3.2.0 3.2.1 3.3.0 3.3.1 3.3.2 3.4.0"),
    ("bzip2", "clib", "1.0.8"), ("xz", "clib", "5.2.6 5.4.6 5.6.3"), ("libffi", "clib", "3.4.2 3.4.4"),
    ("ncurses", "clib", "6.3 6.4 6.5"), ("readline", "clib", "8.1.2 8.2"), ("tk", "clib", "8.6.12 8.6.13"),
    ("libsqlite", "clib", "3.40.0 3.42.0 3.44.2 3.45.3 3.46.1 3.47.0"), ("libuuid", "clib", "2.38.1"),
    ("libnsl", "clib", "2.0.0 2.0.1"), ("libxcrypt", "clib", "4.4.36"), ("ld_impl_linux-64", "clib", "2.40 2.43"),
    ("libcurl", "clib", "8.4.0 8.5.0 8.8.0 8.10.1"), ("libxml2", "clib", "2.11.5 2.12.7 2.13.4"),
    ("icu", "clib", "72.1 73.2 75.1"), ("zstd", "clib", "1.5.5 1.5.6"), ("lz4-c", "clib", "1.9.4"),
    ("libblas", "clib", "3.9.0"), ("liblapack", "clib", "3.9.0"), ("libopenblas", "clib", "0.3.25 0.3.27 0.3.28"),
    ("python_abi", "abi", "3.8 3.9 3.10 3.11 3.12 3.13"),
    ("numpy", "pyext", "1.24.4 1.26.4 2.0.2 2.1.3"),
    ("r-base", "rbase", "4.2.3 4.3.1 4.3.3 4.4.1 4.4.2"), ("perl", "perlbase", "5.32.1"),
    ("tzdata", "generic", "2023c 2024a 2024b"), ("ca-certificates", "generic", "2024.7.4 2024.8.30"),
)
PYTHON_DEPS = ["bzip2 >=1.0.8,<2.0a0", "ld_impl_linux-64 >=2.36.1", "libffi >=3.4,<4.0a0", "libgcc-ng >=12",
               "libnsl >=2.0.0,<2.1.0a0", "libsqlite >=3.43.0,<4.0a0", "libuuid >=2.38.1,<3.0a0",
               "libxcrypt >=4.4.36", "libzlib >=1.2.13,<2.0.0a0", "ncurses >=6.4,<7.0a0",
               "openssl >=3.1.3,<4.0a0", "readline >=8.2,<9.0a0", "tk >=8.6.13,<8.7.0a0", "tzdata",
               "xz >=5.2.6,<6.0a0"]


def numeric_prefix(version):
    """Leading all-digit dot parts: "2026.10.19.post1" -> (2026, 10, 19), "1.0rc1" -> (1,)."""
    out = []
    for part in version.split("."):
        if not re.fullmatch(r"[0-9]+", part):
            break
        out.append(int(part))
    return tuple(out)


def strictly_lower(cand, ref):
    """True if the all-numeric version `cand` is lower than every version whose numeric prefix is `ref`,
    under conda's ordering (zero-padded comparison; anything after ref's prefix cannot make it lower)."""
    n = max(len(cand), len(ref))
    return cand + (0,) * (n - len(cand)) < ref + (0,) * (n - len(ref))


def vstr(t):
    return ".".join(str(x) for x in t)


class Maker:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.hash_pool = ["h%07x" % self.rng.getrandbits(28) for _ in range(60)]

    def pick(self, weighted):
        return self.rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]

    def hhash(self):
        if self.rng.random() < 0.5:
            return self.rng.choice(self.hash_pool)
        return "h%07x" % self.rng.getrandbits(28)

    def size(self, cat):
        mu = {"clib": 13.0, "pyext": 13.3, "pynoarch": 11.3, "rext": 12.5, "rnoarch": 12.0, "perl": 10.5,
              "generic": 12.5}.get(cat, 12.0)
        return max(1500, min(400_000_000, int(self.rng.lognormvariate(mu, 1.2))))

    def record(self, name, version, build, bn, subdir, depends, ts, lic, noarch=None, constrains=None):
        rng = self.rng
        r = {"build": build, "build_number": bn, "depends": depends, "license": lic[0],
             "md5": "%032x" % rng.getrandbits(128), "name": name, "sha256": "%064x" % rng.getrandbits(256),
             "size": self.size(lic[2]), "subdir": subdir, "timestamp": ts, "version": version}
        if lic[1]:
            r["license_family"] = lic[1]
        if subdir == "linux-64":
            r["arch"] = "x86_64"
            r["platform"] = "linux"
        if noarch:
            r["noarch"] = noarch
        if constrains:
            r["constrains"] = constrains
        conda = ts >= CONDA_ERA_MS or rng.random() < 0.15
        return name + "-" + version + "-" + build + (".conda" if conda else ".tar.bz2"), r

    # ---- names and versions ----

    def pseudo_word(self):
        rng = self.rng
        cons, vow = "bcdfgklmnprstvxz", "aeiou"
        w = "".join(rng.choice(cons) + rng.choice(vow) for _ in range(rng.randint(1, 3)))
        return w + (rng.choice("nrlsxkt") if rng.random() < 0.5 else "")

    def root(self):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return rng.choice(MORPHEMES)
        if r < 0.75:
            return rng.choice(MORPHEMES) + rng.choice(MORPHEMES)
        if r < 0.85:
            return rng.choice(MORPHEMES) + "-" + rng.choice(MORPHEMES)
        return self.pseudo_word()

    def name(self, cat):
        rng = self.rng
        if cat == "clib":
            base = ("lib" if rng.random() < 0.55 else "") + self.root()
            return base + self.pick(C_SUFFIXES)
        if cat in ("pyext", "pynoarch"):
            return self.pick(PY_PREFIXES) + self.root() + self.pick(PY_SUFFIXES)
        if cat in ("rext", "rnoarch"):
            return "r-" + self.root().replace("-", "")
        if cat == "perl":
            return "perl-" + self.root() + ("-" + rng.choice(MORPHEMES) if rng.random() < 0.5 else "")
        return rng.choice(("font-", "", "")) + self.root() + rng.choice(("-data", "-icons", "-fonts", "-db", ""))

    def versions(self, count):
        rng = self.rng
        if rng.random() < 0.06:  # calver
            v = [rng.randint(2016, 2023), rng.randint(1, 12), rng.randint(1, 28)]
        elif rng.random() < 0.2:
            v = [rng.randint(0, 5), rng.randint(0, 20)]
        else:
            v = [rng.choice((0, 0, 1, 1, 1, 2, 2, 3, 4, 5, 7, 10)), rng.randint(0, 25), rng.randint(0, 12)]
        out = [vstr(v)]
        while len(out) < count:
            r = rng.random()
            if len(v) == 3 and v[0] >= 2016:
                v = [v[0] + (r < 0.3), rng.randint(1, 12), rng.randint(1, 28)]
            elif r < 0.6 and len(v) == 3:
                v = [v[0], v[1], v[2] + 1]
            elif r < 0.92:
                v = [v[0], v[1] + 1] + ([0] if len(v) == 3 else [])
            else:
                v = [v[0] + 1, 0] + ([0] if len(v) == 3 else [])
            s = vstr(v)
            if s != out[-1]:
                out.append(s)
        return out

    def count(self):
        return min(30, 1 + int(self.rng.expovariate(1 / 6.0)))

    def timestamps(self, n, lo=None, hi=None):
        rng = self.rng
        lo = lo if lo is not None else rng.randint(T_START_MS, T_END_MS - 200 * DAY_MS)
        hi = hi if hi is not None else rng.randint(lo + 30 * DAY_MS, T_END_MS)
        step = (hi - lo) // max(1, n)
        return [lo + i * step + rng.randint(0, max(1, step // 2)) for i in range(n)]

    def older_versions(self, name, real_versions, want):
        """Up to `want` all-numeric versions, each strictly lower than all of `real_versions`."""
        rng = self.rng
        refs = [numeric_prefix(v) for v in real_versions]
        refs = [r for r in refs if r]
        if not refs:
            return []
        if name == "python":
            limits = {7: 17, 8: 20, 9: 20, 10: 15, 11: 11}
            pool = [(3, m, p) for m in sorted(limits) for p in range(limits[m] + 1)]
        else:
            base = min(refs)
            pool = set()
            for i, c in enumerate(base):
                for x in range(max(0, c - 6), c):
                    for _ in range(4):
                        pool.add(base[:i] + (x,) + tuple(rng.randint(0, 12) for _ in range(len(base) - i - 1)))
            pool = sorted(pool)
        pool = [p for p in pool if all(strictly_lower(p, r) for r in refs)]
        if len(pool) > want:
            pool = sorted(rng.sample(pool, want))
        return [vstr(p) for p in pool]


def load_repodata(path, subdir):
    if os.path.exists(path):
        with open(path, "rb") as f:
            return json.load(f)
    return {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--records", type=int, required=True, help="total records wanted over all subdirs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="replace DEST/<subdir> directories")
    ap.add_argument("--zstd-level", type=int, default=19)
    a = ap.parse_args()
    t0 = time.monotonic()
    src, dest = os.path.realpath(a.src), os.path.realpath(a.dest)
    if src == dest or dest.startswith(src + os.sep) or src.startswith(dest + os.sep):
        sys.exit("SRC and DEST must not overlap")
    if not shutil.which("zstd"):
        sys.exit("zstd not found")
    subdirs = sorted(set(SUBDIRS) | {d for d in os.listdir(src)
                                     if os.path.isfile(os.path.join(src, d, "repodata.json"))})
    if os.path.isdir(dest) and os.listdir(dest) and not a.force:
        sys.exit("DEST %s is not empty (use --force to replace its subdirs)" % dest)

    # ---- SRC: records per subdir, versions per name ----
    repo = {sd: load_repodata(os.path.join(src, sd, "repodata.json"), sd) for sd in subdirs}
    real_versions, real_subdir, real_recs = {}, {}, {}
    for sd in subdirs:
        for sec in ("packages", "packages.conda"):
            for fn in sorted(repo[sd].get(sec, {})):
                r = repo[sd][sec][fn]
                real_versions.setdefault(r["name"], []).append(r["version"])
                real_subdir.setdefault(r["name"], sd)
                real_recs.setdefault(r["name"], []).append(r)
    real_count = {sd: sum(len(repo[sd].get(s, {})) for s in ("packages", "packages.conda")) for sd in subdirs}
    # N - (SRC's records) filler records, split so that linux-64 ends up as close to 70% as possible
    total_filler = max(0, a.records - sum(real_count.values()))
    budget = {sd: 0 for sd in subdirs}
    budget["linux-64"] = min(total_filler, max(0, round(a.records * LINUX_SHARE) - real_count["linux-64"]))
    budget["noarch"] = total_filler - budget["linux-64"]

    m = Maker(a.seed)
    rng = m.rng
    filler = {sd: {} for sd in subdirs}
    used = set(real_versions) | {"python"}  # names taken (membership only: never iterated)
    group_names = {"c": [], "py": [], "r": [], "perl": [], "generic": []}
    name_versions = {}

    def add(sd, items):
        n = 0
        for fn, r in items:
            if budget[sd] <= 0:
                break
            if fn in filler[sd] or fn in repo[sd].get("packages", {}) or fn in repo[sd].get("packages.conda", {}):
                continue
            filler[sd][fn] = r
            budget[sd] -= 1
            n += 1
        return n

    def dep_spec(name, style="ge"):
        vs = name_versions.get(name)
        if not vs:
            return name
        v = rng.choice(vs[: max(1, len(vs) // 2 + 1)])
        if style == "pin":
            t = numeric_prefix(v)
            if len(t) >= 2:
                return "%s >=%s,<%s.%d.0a0" % (name, v, t[0], t[1] + 1)
            return "%s >=%s,<%d.0a0" % (name, v, (t[0] if t else 0) + 1)
        r = rng.random()
        if r < 0.25:
            return name
        if r < 0.85:
            return "%s >=%s" % (name, v)
        t = numeric_prefix(v)
        return "%s >=%s,<%d" % (name, v, (t[0] if t else 0) + 1)

    def pick_deps(group, k, exclude, style="ge"):
        names = group_names[group]
        out = []
        for _ in range(k):
            if not names:
                break
            n = rng.choice(names)
            if n != exclude and n not in out:
                out.append(n)
        return [dep_spec(n, style) for n in out]

    # ---- 1: older versions of SRC's names (never newer than SRC's: see docstring) ----
    py_real = [n for n in sorted(real_versions) if real_subdir[n] == "noarch" or n == "python"]
    olds_of = {}
    for name in sorted(real_versions):
        want = 24 if name == "python" else rng.randint(4, 20)
        olds_of[name] = m.older_versions(name, real_versions[name], want) if real_subdir[name] in SUBDIRS else []
        name_versions[name] = olds_of[name] + sorted(real_versions[name], key=numeric_prefix)
    for name in sorted(real_versions):
        sd, olds = real_subdir[name], olds_of[name]
        if not olds:
            continue
        newest = max(real_recs[name], key=lambda r: r.get("timestamp", 0))
        real_ts = newest.get("timestamp", T_END_MS)
        tss = m.timestamps(len(olds), real_ts - 6 * 365 * DAY_MS, real_ts - 30 * DAY_MS)
        lic = (newest.get("license", "MIT"), newest.get("license_family"), "pynoarch")
        items = []
        for i, (v, ts) in enumerate(zip(olds, tss)):
            frac = i / max(1, len(olds))
            if name == "python":
                t = numeric_prefix(v)
                for bn in range(rng.randint(1, 3)):
                    items.append(m.record(name, v, "%s_%d_cpython" % (m.hhash(), bn), bn, sd, list(PYTHON_DEPS),
                                          ts + bn * DAY_MS, (lic[0], lic[1], "clib"),
                                          constrains=["python_abi %d.%d.* *_cp%d%d" % (t[0], t[1], t[0], t[1])]))
                continue
            deps = []
            for d in newest.get("depends", []):
                dn = d.split()[0]
                if dn == "python" or dn.startswith("__"):
                    continue
                deps.append(dep_spec(dn) if dn in name_versions else dn)
            if sd == "noarch":
                deps.append("python >=3.%d" % (6 + int(frac * 3)))
                bn = rng.choice((0, 0, 0, 1))
                build = ("pyhd8ed1ab_%d" if rng.random() < 0.8 else "py_%d") % bn
                items.append(m.record(name, v, build, bn, sd, deps, ts, lic, noarch="python"))
            else:  # compiled: one build per python of its era
                lo = min(3, int(frac * 3))
                for major, minor in PYTHONS[lo:lo + rng.randint(2, 4)]:
                    if (major, minor) > (3, 12):
                        continue
                    bn = rng.choice((0, 0, 1))
                    pydeps = ["libgcc-ng >=12", "python >=%d.%d,<%d.%d.0a0" % (major, minor, major, minor + 1),
                              "python_abi %d.%d.* *_cp%d%d" % (major, minor, major, minor)]
                    items.append(m.record(name, v, "py%d%dh%s_%d" % (major, minor, m.hhash()[1:], bn), bn, sd,
                                          pydeps + deps, ts, (lic[0], lic[1], "pyext")))
        add(sd, items)

    # ---- 2: core filler, then 3: random names until both subdirs have their share ----
    def make_name(name, cat, versions):
        sd = CATEGORIES[cat][0] if cat in CATEGORIES else "linux-64"  # abi, rbase, perlbase: linux-64
        name_versions[name] = versions
        lic_ = rng.choice(LICENSES)
        lic = (lic_[0], lic_[1] if rng.random() < 0.7 else None, cat)
        tss = m.timestamps(len(versions))
        items = []
        for i, (v, ts) in enumerate(zip(versions, tss)):
            frac = i / max(1, len(versions))
            cons = None
            if rng.random() < 0.15 and group_names[GROUP.get(cat, "c")]:
                cons = pick_deps(GROUP.get(cat, "c"), 1, name)
            if cat == "abi":
                t = numeric_prefix(v)
                items.append(m.record(name, v, "4_cp%d%d" % t[:2], 4, sd, [], ts, lic,
                                      constrains=["python %d.%d.* *_cpython" % t[:2]]))
            elif cat in ("clib", "rbase", "perlbase"):
                deps = [] if name in ("libgcc-ng", "libstdcxx-ng", "libgomp") else ["libgcc-ng >=12"]
                if rng.random() < 0.5 and deps:
                    deps.append("libstdcxx-ng >=12")
                deps += pick_deps("c", rng.choice((0, 0, 1, 1, 2, 3, 4)), name, "pin")
                suffix = {"perlbase": "_perl5", "rbase": ""}.get(cat, "")
                for bn in range(rng.choice((1, 1, 1, 2, 3))):
                    items.append(m.record(name, v, "%s_%d%s" % (m.hhash(), bn, suffix), bn, sd, deps, ts + bn * DAY_MS,
                                          lic, constrains=cons))
            elif cat == "pyext":
                lo = int(frac * 3)
                pydeps = pick_deps("py", rng.choice((0, 1, 1, 2, 3)), name) + \
                    pick_deps("c", rng.choice((0, 1, 2)), name, "pin")
                for major, minor in PYTHONS[lo:lo + rng.randint(2, 4)]:
                    bn = rng.choice((0, 0, 1))
                    deps = ["libgcc-ng >=12", "python >=%d.%d,<%d.%d.0a0" % (major, minor, major, minor + 1),
                            "python_abi %d.%d.* *_cp%d%d" % (major, minor, major, minor)] + pydeps
                    items.append(m.record(name, v, "py%d%dh%s_%d" % (major, minor, m.hhash()[1:], bn), bn, sd,
                                          deps, ts, lic, constrains=cons))
            elif cat == "pynoarch":
                deps = ["python >=3.%d" % (7 + int(frac * 3))] + pick_deps("py", rng.choice((0, 1, 1, 2, 3, 4, 5)), name)
                if py_real and rng.random() < 0.3:
                    rn = rng.choice(py_real)
                    if rn != "python":
                        deps.append(dep_spec(rn))
                bn = rng.choice((0, 0, 0, 1, 2))
                build = ("pyhd8ed1ab_%d" if rng.random() < 0.8 else "pyh%s_%%d" % m.hhash()[1:]) % bn
                items.append(m.record(name, v, build, bn, sd, deps, ts, lic, noarch="python", constrains=cons))
            elif cat in ("rext", "rnoarch"):
                rvers = ((4, 2), (4, 3), (4, 4))[min(2, int(frac * 3)):]
                rdeps = pick_deps("r", rng.choice((0, 1, 2, 3, 5)), name)
                for rmaj, rmin in rvers[: rng.randint(1, 2)]:
                    bn = rng.choice((0, 0, 1))
                    if cat == "rext":
                        deps = ["libgcc-ng >=12", "r-base >=%d.%d,<%d.%d.0a0" % (rmaj, rmin, rmaj, rmin + 1)] + rdeps
                        items.append(m.record(name, v, "r%d%dh%s_%d" % (rmaj, rmin, m.hhash()[1:], bn), bn, sd,
                                              deps, ts, lic, constrains=cons))
                    else:
                        deps = ["r-base >=%d.%d" % (rmaj, rmin)] + rdeps
                        items.append(m.record(name, v, "r%d%dhc72bb7e_%d" % (rmaj, rmin, bn), bn, sd, deps, ts, lic,
                                              noarch="generic", constrains=cons))
            elif cat == "perl":
                bn = rng.choice((0, 0, 1, 2))
                deps = ["libgcc-ng >=12", "perl >=5.32.1,<5.33.0a0 *_perl5"] + pick_deps("perl", rng.choice((0, 1, 2)), name)
                items.append(m.record(name, v, "pl5321h%s_%d" % (m.hhash()[1:], bn), bn, sd, deps, ts, lic))
            else:  # generic
                bn = rng.choice((0, 0, 1))
                build = ("hd8ed1ab_%d" if rng.random() < 0.7 else "ha770c72_%d") % bn
                items.append(m.record(name, v, build, bn, sd, [], ts, lic, noarch="generic"))
        if add(sd, items) and cat in GROUP:  # python_abi, r-base, perl: depended on explicitly only
            group_names[GROUP[cat]].append(name)

    for name, cat, versions in CORE:
        if name not in used:
            used.add(name)
            make_name(name, cat, versions.split())
    cats = {sd: [(c, w) for c, (s, w) in CATEGORIES.items() if s == sd] for sd in SUBDIRS}
    tries = 0
    while any(budget[sd] > 0 for sd in SUBDIRS):
        open_sds = [sd for sd in SUBDIRS if budget[sd] > 0]
        cat = m.pick(cats[rng.choice(open_sds)])
        name = m.name(cat)
        tries += 1
        if name in used or name.startswith("_") or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            if tries > 10 * a.records + 1000:
                sys.exit("ran out of names")
            continue
        used.add(name)
        make_name(name, cat, m.versions(m.count() if cat not in ("pyext", "rext") else max(1, m.count() // 2)))

    # ---- write DEST ----
    os.makedirs(dest, exist_ok=True)
    linked = copied = 0
    procs = []
    summary = {"records": {}, "real": {}, "filler": {}, "repodata_json_bytes": {}, "repodata_zst_bytes": {}}
    for sd in subdirs:
        out = os.path.join(dest, sd)
        if os.path.lexists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        sdir = os.path.join(src, sd)
        for fn in sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []:
            p = os.path.join(sdir, fn)
            if fn.endswith(PKG_EXTS) and os.path.isfile(p):
                try:
                    os.link(p, os.path.join(out, fn))
                    linked += 1
                except OSError:
                    shutil.copy2(p, os.path.join(out, fn))
                    copied += 1
        doc = dict(repo[sd])
        doc["packages"] = dict(repo[sd].get("packages", {}))
        doc["packages.conda"] = dict(repo[sd].get("packages.conda", {}))
        for fn, r in filler[sd].items():
            doc["packages.conda" if fn.endswith(".conda") else "packages"][fn] = r
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        path = os.path.join(out, "repodata.json")
        with open(path, "wb") as f:
            f.write(data)
        procs.append((sd, path, subprocess.Popen(["zstd", "-%d" % a.zstd_level, "-q", "-f", path, "-o", path + ".zst"])))
        summary["records"][sd] = len(doc["packages"]) + len(doc["packages.conda"])
        summary["real"][sd] = real_count[sd]
        summary["filler"][sd] = len(filler[sd])
        summary["repodata_json_bytes"][sd] = len(data)
    for sd, path, p in procs:
        if p.wait() != 0:
            sys.exit("zstd failed for " + path)
        summary["repodata_zst_bytes"][sd] = os.path.getsize(path + ".zst")
    summary["total_records"] = sum(summary["records"].values())
    summary["files"] = {"linked": linked, "copied": copied}
    summary["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
