"""Hub references: a checkpoint given as ``hf://OWNER/REPO[@REVISION]/PATH``.

``hf://OWNER/REPO/PATH/IN/REPO`` names a checkpoint file; ``hf://OWNER/REPO`` or
``hf://OWNER/REPO/FOLDER/`` (trailing slash) a weight folder (``folder``). The spelling is
huggingface_hub's (``parse_hf_uri``, as ``HfFileSystem`` reads it). Files come through
``hf_hub_download``, folders through ``snapshot_download`` limited to the folder's own files:
huggingface_hub's cache, resumable downloads with a progress bar, and ``HF_HUB_OFFLINE``, under
which a cached file works and a missing one is a ``UserError`` naming the repository and file.

A cached file lies at ``snapshots/<commit>/<path>``, a link to ``blobs/<etag>``; a file stored
with LFS has its sha256 as etag. Both the commit (``revision``) and that sha256 are recorded
wherever the checkpoint is (``Located.record``). Local paths pass through untouched and are not
hashed here (``benco weights info`` does).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imdlbenco_maskclip.common.errors import UserError

PREFIX = "hf://"
FOLDER_FILES = ("model.safetensors", "config.json", "README.md")
"""The files of a weight folder: the only ones a folder reference downloads."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Located:
    """A checkpoint as given (``given``: a local path or a hub reference) and where it lies
    here (``path``: a file or a weight folder); for a hub reference also its canonical
    ``reference``, the commit it resolved to (``revision``) and the sha256 of the file (of a
    folder's ``model.safetensors``) when the hub stores it with LFS."""

    given: str
    path: Path
    reference: str | None = None
    revision: str | None = None
    sha256: str | None = None

    def record(self) -> dict[str, Any]:
        """What results, reports and predictions record of it: ``checkpoint`` (as given) and,
        for a hub reference, ``reference``, ``revision`` and ``sha256``."""
        extra = {"reference": self.reference, "revision": self.revision, "sha256": self.sha256}
        return {"checkpoint": self.given, **{key: value for key, value in extra.items() if value}}


def is_reference(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` is spelled as a hub reference (``hf://...``)."""
    return str(checkpoint).startswith(PREFIX)


def short_name(reference: str) -> str:
    """A hub reference's file stem, or its folder's name (the repository's for its root)."""
    uri = _parse(reference)
    last = uri.path_in_repo.rsplit("/", 1)[-1]
    if _is_folder(uri, reference):
        return last or uri.id.split("/", 1)[1]
    return Path(last).stem


def locate(checkpoint: str | Path) -> Located:
    """Where ``checkpoint`` lies on this machine: a local path as it is (``~`` expanded), a hub
    reference downloaded into (or found in) the Hugging Face cache."""
    if not is_reference(checkpoint):
        return Located(str(checkpoint), Path(checkpoint).expanduser())
    given = str(checkpoint)
    uri = _parse(given)
    folder = _is_folder(uri, given)
    try:
        local = _download_folder(uri) if folder else _download_file(uri)
    except Exception as error:  # huggingface_hub raises many kinds; each gets its sentence
        raise UserError(f"--checkpoint: {_explain(error, uri, given, folder)}") from None
    return _located(given, uri, Path(local), folder)


def _parse(reference: str) -> Any:
    """huggingface_hub's reading of a reference; a malformed one (or a bucket's) is a
    ``UserError`` that shows the spelling."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    try:
        uri = parse_hf_uri(reference)
    except HfUriError as error:
        raise UserError(
            f"--checkpoint: {reference} is not a hub reference ({error}); write hf://OWNER/REPO/PATH for a file, "
            "hf://OWNER/REPO or hf://OWNER/REPO/FOLDER/ for a weight folder, with @REVISION after the repository"
        ) from None
    if not uri.is_repo:
        raise UserError(f"--checkpoint: {reference} names a bucket; weights are read from a model repository")
    return uri


def _is_folder(uri: Any, reference: str) -> bool:
    return not uri.path_in_repo or reference.endswith("/")


def _download_file(uri: Any) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(uri.id, uri.path_in_repo, repo_type=uri.type, revision=uri.revision)


def _download_folder(uri: Any) -> str:
    from huggingface_hub import snapshot_download

    inside = f"{uri.path_in_repo}/" if uri.path_in_repo else ""
    snapshot = snapshot_download(
        uri.id, repo_type=uri.type, revision=uri.revision, allow_patterns=[inside + name for name in FOLDER_FILES]
    )
    folder = Path(snapshot) / uri.path_in_repo
    for name in FOLDER_FILES[:2]:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{uri.id}{'@' + uri.revision if uri.revision else ''} has no {inside}{name} in the Hugging Face "
                f"cache ({snapshot}), so {inside or 'its root'} is not a weight folder there"
            )
    return str(folder)


def _located(given: str, uri: Any, local: Path, folder: bool) -> Located:
    """The commit is the ``snapshots/<commit>`` folder the cache answered with; the sha256 is
    the name of the blob the file links to, when it is one (the LFS etag)."""
    parts = local.parts
    revision = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    weights = local / FOLDER_FILES[0] if folder else local
    blob = Path(os.path.realpath(weights)).name
    reference = uri.to_uri().replace("hf://models/", PREFIX, 1) + ("/" if folder and uri.path_in_repo else "")
    return Located(given, local, reference, revision, blob if _SHA256.fullmatch(blob) else None)


def _explain(error: Exception, uri: Any, given: str, folder: bool) -> str:
    from huggingface_hub import errors

    at = f" at revision {uri.revision}" if uri.revision else ""
    what = f"the weight folder {uri.path_in_repo or '(the root)'}" if folder else f"the file {uri.path_in_repo}"
    first_line = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, errors.GatedRepoError):
        return f"{uri.id} is gated: accept its terms on the hub, then log in (hf auth login) ({given})"
    if isinstance(error, errors.RepositoryNotFoundError):
        return f"the hub has no repository {uri.id} (or it is private: log in with hf auth login) ({given})"
    if isinstance(error, errors.RevisionNotFoundError):
        return f"{uri.id} has no revision {uri.revision} ({given})"
    if isinstance(error, errors.LocalEntryNotFoundError):
        offline = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached"
        inside = f"{uri.path_in_repo}/" if uri.path_in_repo else ""
        files = " ".join(inside + name for name in FOLDER_FILES) if folder else uri.path_in_repo
        revision = f" --revision {uri.revision}" if uri.revision else ""
        return (
            f"{what} of {uri.id}{at} is not in the Hugging Face cache and {offline} ({given}). Download it where "
            f"there is network (hf download {uri.id} {files}{revision}), or pass a local path"
        )
    if isinstance(error, errors.EntryNotFoundError):
        hint = "" if folder else f"; a weight folder is written with a trailing slash: {given.rstrip('/')}/"
        return f"{uri.id}{at} has no {uri.path_in_repo} ({given}){hint}"
    if isinstance(error, FileNotFoundError):
        return f"{first_line} ({given})"
    return f"cannot get {what} of {uri.id}{at} ({given}): {type(error).__name__}: {first_line}"


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
