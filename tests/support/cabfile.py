"""A minimal cabinet (MSCF) writer for tests: stored (uncompressed) files in one folder.

No packaged tool here writes cabinets, and the tests need real ones (the outer wsusscn2.cab and
its inner package*.cab files) for cabextract to read, so this follows the published format:
CFHEADER, one CFFOLDER, CFFILE entries, then CFDATA blocks of at most 32 KiB.
"""

from __future__ import annotations

import struct
from pathlib import Path

_BLOCK = 0x8000


def write_cab(target: Path, files: dict[str, bytes]) -> Path:
    """Write `files` (name with / or \\ separators -> bytes) as a cabinet at `target`."""
    names = sorted(files)
    payload = b"".join(files[n] for n in names)
    blocks = [payload[i : i + _BLOCK] for i in range(0, len(payload), _BLOCK)] or [b""]
    entries = b""
    offset = 0
    for name in names:
        encoded = name.replace("/", "\\").encode("ascii") + b"\0"
        # cbFile, uoffFolderStart, iFolder, date (2024-01-01), time, attribs (archive)
        entries += struct.pack("<IIHHHH", len(files[name]), offset, 0, 0x5821, 0, 0x20) + encoded
        offset += len(files[name])
    header_size, folder_size = 36, 8
    first_file = header_size + folder_size
    first_data = first_file + len(entries)
    data = b"".join(struct.pack("<IHH", 0, len(b), len(b)) + b for b in blocks)
    total = first_data + len(data)
    header = struct.pack("<4sIIIIIBBHHHHH", b"MSCF", 0, total, 0, first_file, 0, 3, 1, 1,
                         len(names), 0, 0x1234, 0)
    folder = struct.pack("<IHH", first_data, len(blocks), 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(header + folder + entries + data)
    return target


def pack_catalog(folder: Path, target: Path) -> Path:
    """An extracted wsusscn2 folder back into the shape Microsoft ships: index.xml plus one
    inner cabinet per subfolder, all inside the outer cabinet."""
    inner: dict[str, bytes] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        members = {f.relative_to(sub).as_posix(): f.read_bytes()
                   for f in sorted(sub.rglob("*")) if f.is_file()}
        cab = target.parent / f".{sub.name}.cab"
        write_cab(cab, members)
        inner[f"{sub.name}.cab"] = cab.read_bytes()
        cab.unlink()
    inner["index.xml"] = (folder / "index.xml").read_bytes()
    return write_cab(target, inner)
