"""Proof that a registered model is still the one that was registered.

A registered model carries code: its ``MLmodel`` names a Python file that loading runs,
and its ``requirements.txt`` is what ``mlflow models serve`` would install. Whoever can
write the artifact store (a bucket, a shared folder) could change them, or the network,
and run code in ``promote``, ``predict`` or a server. The registry, a database with its
own access rights, therefore records the SHA-256 of every file of the model in one tag
of the version when it is registered (``VersionTag.FILE_DIGESTS``, JSON by path: one tag,
so the version's page opens on its figures, not on a dozen digests). Versions registered
before it hold one tag a file (``automl.sha256/<file>``), and are checked the same way.
Loading a version copies its files, checks the copy against that record, and loads only
the checked copy, so no file is run between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from automl.environment import ALLOW_UNVERIFIED_MODELS
from automl.errors import ConfigError
from automl.records import VersionTag, VersionTags

# Written by MLflow into a downloaded model folder, not part of what was registered.
LOCAL_FILES = frozenset({"registered_model_meta"})
# Reports automl attaches to a version after registration (``automl evaluate``): data
# that loading never reads nor puts on the import path, so not part of the record.
ATTACHED = ("evaluation/",)


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by path relative to it (``/``-separated)."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink() and not name.startswith(ATTACHED):  # could point anywhere
            found[name] = "symlink"
        elif path.is_file() and name not in LOCAL_FILES and not name.startswith(ATTACHED):
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            found[name] = digest.hexdigest()
    return found


def digest_tags(folder: Path) -> dict[str, str]:
    """The version tag that records ``folder``'s files: one, whatever their number."""
    digests = json.dumps(file_digests(folder), sort_keys=True, separators=(",", ":"))
    return {VersionTag.FILE_DIGESTS: digests}


def recorded_digests(tags: Mapping[str, str], what: str) -> dict[str, str]:
    """The digests a version recorded, by path, from either form of the record."""
    try:
        return VersionTags.of(tags).file_digests
    except ValueError:
        raise ConfigError(
            f"{what}: its tag {VersionTag.FILE_DIGESTS} is not a JSON object of file path "
            f"to SHA-256, so its files cannot be checked; refusing to load it"
        ) from None


def verify(folder: Path, tags: Mapping[str, str], what: str) -> None:
    """Refuse, in one line, a model whose files differ from those its version recorded."""
    recorded = recorded_digests(tags, what)
    if not recorded:
        if ALLOW_UNVERIFIED_MODELS.get():
            return
        raise ConfigError(
            f"{what}: no SHA-256 of its files was recorded when it was registered, so its "
            f"code cannot be checked; refusing to load it "
            f"({ALLOW_UNVERIFIED_MODELS.name}=1 loads it anyway)"
        )
    actual = file_digests(folder)
    changed = sorted(name for name, digest in recorded.items() if actual.get(name) != digest)
    added = sorted(set(actual) - set(recorded))
    if changed or added:
        parts = [f"changed or missing: {', '.join(changed)}"] if changed else []
        parts += [f"added: {', '.join(added)}"] if added else []
        raise ConfigError(
            f"{what}: its files differ from those recorded when it was registered "
            f"({'; '.join(parts)}); refusing to load it: the artifact store was modified"
        )
