"""Builds the krew archive of `kubectl ragops` byte for byte reproducibly: `python plugins/krew/archive.py [OUT]`.

The archive holds the launcher script only (the plugin itself is in the ragops Python package). It
is a zip of stored (uncompressed) entries with fixed dates and modes, so its bytes, and the SHA-256
written into ragops.yaml, do not depend on the machine or its zlib; a test rebuilds it and checks
the two agree.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "kubectl-ragops"
DEFAULT_OUTPUT = Path("dist/kubectl-ragops.zip")


def archive_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        entry = zipfile.ZipInfo("kubectl-ragops", date_time=(1980, 1, 1, 0, 0, 0))
        entry.create_system = 3  # Unix, so the mode below is honoured
        entry.external_attr = (0o100755 & 0xFFFF) << 16
        archive.writestr(entry, LAUNCHER.read_bytes())
    return buffer.getvalue()


def sha256() -> str:
    return hashlib.sha256(archive_bytes()).hexdigest()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archive_bytes())
    print(f"{target} sha256 {sha256()}")
