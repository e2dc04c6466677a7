"""Where a model version's files come from: a local folder, or a Hugging Face Hub id that is cached or can be
fetched now. Fails at once with ModelLoadError rather than letting transformers retry for a minute."""

import socket
from pathlib import Path
from urllib.parse import urlparse

from generation.backend import ModelLoadError, load_error_message

HUB_CONNECT_TIMEOUT_S = 3.0


def hub_source(path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only) for a folder or a Hub id.

    A Hub id that is neither cached nor reachable fails here at once: transformers would otherwise
    retry for about a minute before giving up."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return str(folder), True
    if path.startswith((".", "/", "~")) or "\\" in path:
        raise ModelLoadError(load_error_message(path, f"there is no folder at {folder}"))
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return path, True
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(load_error_message(path, "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set"))
    if not _reachable(constants.ENDPOINT):
        raise ModelLoadError(load_error_message(
            path, f"it is not in the Hugging Face cache and {constants.ENDPOINT} cannot be reached"))
    return path, False


def looks_like_hub_id(path: str) -> bool:
    """'org/name' or 'name': not a folder here, not written as a path."""
    return not (Path(path).expanduser().exists() or path.startswith((".", "/", "~")) or "\\" in path)


def hub_revision(repo_id: str) -> str:
    """The commit a Hub model id resolves to now: from the local cache, else asked of the Hub. Fails at once
    with ModelLoadError when the model is neither cached nor reachable, or the Hub does not know it."""
    hub_source(repo_id)  # cached, or the Hub answers: else a clear ModelLoadError without waiting
    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    try:
        return HfApi().model_info(repo_id, timeout=HUB_CONNECT_TIMEOUT_S * 5).sha
    except Exception as error:  # noqa: BLE001  (any Hub failure: not found, gated, timeout)
        raise ModelLoadError(load_error_message(repo_id, f"the Hub did not give it: {error}")) from None


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
    except OSError:
        return False
    return True
