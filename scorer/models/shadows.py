"""A model's shadow: the version scored beside the current one (scorer.batch.shadow), never
current until promoted.

Marked by empty blobs beside the versions, read in the same listing as they are
(Registry.listing): ``<name>/shadow-v<N>``, the shadow; ``<name>/held-v<N>``, a version that
was the shadow and was stopped without being promoted, so that stopping a shadow never makes
it current. The current version is the highest one without a mark (Registry.card).
"""

from __future__ import annotations

from typing import Any

from scorer.errors import ConfigError



def set_shadow(registry: Any, name: str, version: int | None) -> int | None:
    """Make ``version`` the shadow of ``name``, or stop the shadow (None); returns the
    shadow before. A shadow is marked by an empty blob, ``<name>/shadow-v<N>``, read in the
    same listing as the versions; a stopped one stays held (``held-v<N>``): stopping a
    shadow never makes it current. Raises ConfigError for a version that is not published,
    or the current one."""
    versions, before, held = registry.listing(name)
    if version is not None:
        if version not in versions:
            raise ConfigError(f"Model {name!r} has no version {version} (versions: {versions or 'none'}).",
                              hint="Publish it, or name a published version.")
        current = [v for v in versions if v not in held]
        if current and current[-1] == version:
            raise ConfigError(f"Version {version} of {name!r} is the current one: a shadow is scored beside it.",
                              hint="Publish the challenger with --shadow, or name another version.")
    mark(registry, name, version)
    return before


def mark(registry: Any, name: str, version: int | None, promoted: bool = False) -> None:
    """``version`` the shadow (None: none); the shadow before held, unless ``promoted``."""
    for b in registry.store.list_names(registry.container, prefix=f"{name}/shadow-v"):
        if version is None or b.name != f"{name}/shadow-v{version}":
            if not promoted:
                registry.store.put_bytes(registry.container, b.name.replace("/shadow-v", "/held-v"), b"")
            registry.store.delete(registry.container, b.name)
    if version is not None:
        registry.store.delete(registry.container, f"{name}/held-v{version}")
        registry.store.put_bytes(registry.container, f"{name}/shadow-v{version}", b"")


def promote(registry: Any, name: str) -> int:
    """Make the shadow of ``name`` current; returns its version. Raises ConfigError when
    there is no shadow, or when a version published after it would stay current."""
    versions, shadow, held = registry.listing(name)
    if shadow is None:
        raise ConfigError(f"Model {name!r} has no shadow to promote.",
                          hint=f"Publish one with `scorer models publish FILE --name {name} --shadow`.")
    later = [v for v in versions if v > shadow and v not in held]
    if later:
        raise ConfigError(f"Model {name!r}: version {later[-1]} was published after the shadow (version "
                          f"{shadow}) and would stay current: the current version is the highest one not held.",
                          hint=f"Publish the shadow's file again (it becomes version {versions[-1] + 1}), or stop "
                          f"the shadow (`scorer models shadow {name} --off`).")
    mark(registry, name, None, promoted=True)
    return shadow

