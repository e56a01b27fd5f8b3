"""Filing a GPU session's archive (`scripts/gpu_session.sh`) under results/<device>/<date>-<git sha>/.

`rbench results import ARCHIVE` unpacks the archive without trusting it (regular files only, no
absolute paths, no `..`, bounded size), checks that every run file in it loads with
`rbench.results.load`, and copies everything it holds (run files, logs, `rbench env`, nvidia-smi
output, benchmark JSON, manifest) into one directory named from the run files' own provenance: the
device they ran on, the day the first run started and the git commit of the harness. A later archive of
the same session (the script's state grows call by call) replaces the earlier import.
Reads results only: no torch.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rbench import results
from rbench.names import one_line, slug

MAX_BYTES = 1 << 30  # an archive that unpacks to more than this is not one of ours
MANIFEST = "manifest.json"


class ArchiveError(ValueError):
    """An archive that cannot be imported: one line, exit status 2."""


@dataclass
class Imported:
    """Where an archive went and what it held."""

    destination: Path
    files: list[str]  # relative to the destination
    runs: list[results.Run]
    device: str
    replaced: bool  # an earlier archive of the same session was there and was replaced


def unpack(archive: str | Path, into: Path) -> list[str]:
    """Extract the archive's regular files into `into`; returns their paths, the common top folder removed."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:*")
    except FileNotFoundError:
        raise ArchiveError(f"{archive}: no such file") from None
    except IsADirectoryError:
        raise ArchiveError(f"{archive}: a directory, not an archive") from None
    except (tarfile.TarError, OSError):
        raise ArchiveError(f"{archive}: not a tar archive (give the gpu-results.tar.gz that "
                           "scripts/gpu_session.sh writes)") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ArchiveError(f"{archive}: damaged archive ({one_line(e)})") from None
        files = []
        for m in members:
            parts = PurePosixPath(m.name).parts
            if m.isdir():
                continue
            if not m.isfile():
                raise ArchiveError(f"{archive}: {m.name}: not a regular file (links and devices are refused)")
            if not parts or PurePosixPath(m.name).is_absolute() or ".." in parts:
                raise ArchiveError(f"{archive}: {m.name}: a path outside the archive")
            files.append((m, parts))
        if sum(m.size for m, _ in files) > MAX_BYTES:
            raise ArchiveError(f"{archive}: unpacks to more than {MAX_BYTES >> 20} MiB")
        tops = {parts[0] for _, parts in files}
        strip = 1 if len(tops) == 1 and all(len(parts) > 1 for _, parts in files) else 0
        out = []
        for m, parts in files:
            rel = PurePosixPath(*parts[strip:])
            dest = into.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            if src is None:
                raise ArchiveError(f"{archive}: {m.name}: cannot be read")
            with src, open(dest, "wb") as f:
                shutil.copyfileobj(src, f)
            out.append(str(rel))
    return sorted(out)


def check_runs(archive: str | Path, root: Path, files: list[str]) -> list[results.Run]:
    """Every run file in the archive, read; refuses an archive with none or with one that does not load."""
    names = [f for f in files if f.endswith(results.RUN_SUFFIX)]
    if not names:
        raise ArchiveError(f"{archive}: holds no run files (*{results.RUN_SUFFIX}): nothing to import")
    runs = []
    for name in names:
        path = root / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", results.TornLineWarning)
                run = results.read_run(path)
                results.load(path)
        except (results.RunFileError, ValueError, KeyError, TypeError, AttributeError) as e:
            why = one_line(e).replace(str(root) + "/", "")
            raise ArchiveError(f"{archive}: {name} does not load: {why}") from None
        runs.append(run)
    return runs


def read_manifest(root: Path) -> dict[str, Any]:
    try:
        obj = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def device_of(archive: str | Path, runs: list[results.Run]) -> str:
    names = sorted({str((r.env.get("device") or {}).get("name") or "unknown device") for r in runs})
    if len(names) > 1:
        raise ArchiveError(f"{archive}: its run files come from several devices ({', '.join(names)}): "
                           "import one archive per machine")
    return names[0]


def folder_name(runs: list[results.Run], manifest: dict[str, Any]) -> str:
    """`<date>-<sha>`: the day the first run started, the harness's commit (`-dirty` if it had changes)."""
    started = sorted(str(r.header.get("started") or "") for r in runs if r.header.get("started"))
    date = (started[0][:10] if started else str(manifest.get("updated", ""))[:10]) or results.now()[:10]
    gits = [r.env.get("git") or {} for r in runs] + [manifest.get("git") or {}]
    sha = next((str(g["sha"]) for g in gits if g.get("sha")), "")
    dirty = any(g.get("dirty") is True for g in gits if g.get("sha"))
    return slug(f"{date}-{sha[:12] or 'nogit'}{'-dirty' if dirty else ''}")


def _same_session(folder: Path, session: str | None) -> bool:
    return bool(session) and read_manifest(folder).get("session") == session


def import_archive(archive: str | Path, into: str | Path = "results") -> Imported:
    """Check the archive and copy its files to `into/<device>/<date>-<sha>/` (see the module docstring)."""
    into = Path(into)
    with tempfile.TemporaryDirectory(prefix="rbench-import-") as tmp:
        root = Path(tmp) / "unpacked"
        files = unpack(archive, root)
        runs = check_runs(archive, root, files)
        manifest = read_manifest(root)
        device = device_of(archive, runs)
        base = into / slug(device) / folder_name(runs, manifest)
        session = manifest.get("session")
        dest, n = base, 1
        while dest.exists() and not _same_session(dest, session):
            n += 1
            dest = base.with_name(f"{base.name}-{n}")
        replaced = dest.exists()
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        shutil.copytree(root, staging, dirs_exist_ok=True)
        if replaced:
            old = dest.with_name(f".{dest.name}-replaced")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(dest)
        kept = [results.Run(path=dest / Path(r.path).relative_to(root), header=r.header, records=r.records,
                            events=r.events) for r in runs]
    return Imported(dest, files, kept, device, replaced)
