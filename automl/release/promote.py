"""Moving an alias (``champion``) between versions, behind an accuracy gate, and back.

A candidate replaces the champion only when it is at least as accurate on the same test
split, re-measured now with the registered models themselves. Every move is recorded as
version tags and in an alias history kept on the registered model, which rollback uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl.data import ImageData, load_recorded, split_digest
from automl.data.adapt import load_like
from automl.errors import AutomlError, ConfigError
from automl.records import VersionTag, VersionTags
from automl.records.version import figure
from automl.tracking import Registry, VersionInfo, load_image_model
from automl.tracking.models import ImageModel
from automl.tracking.registry import now


class PromotionRefused(AutomlError):
    """The candidate is less accurate than the champion; nothing was changed."""

    exit_code = 1


@dataclass(frozen=True)
class Evidence:
    """Candidate and champion on a test split other than the gate's (forgetting shows here)."""

    split: str
    images: int
    candidate_acc: float
    champion_acc: float | None


@dataclass(frozen=True)
class Promotion:
    name: str
    alias: str
    candidate: VersionInfo
    champion: VersionInfo | None
    candidate_acc: float
    champion_acc: float | None
    test_images: int
    promoted: bool
    forced: bool
    split: str = ""  # the gate's test split
    evidence: tuple[Evidence, ...] = ()
    notes: tuple[str, ...] = ()
    already: bool = False  # the version already held the alias: nothing was done

    @property
    def first(self) -> bool:
        return self.champion is None


def recorded_test_split(versions: list[VersionInfo], data_dir: Path | None) -> ImageData:
    """Load the data set the versions were tested on; refuse unless the split is identical."""
    for version in versions:
        if not VersionTags.of(version.tags).records_test_split:
            raise ConfigError(
                f"version {version.version} does not record its test split (tags "
                f"'{VersionTag.DATASET}' and '{VersionTag.TEST_DIGEST}'); it cannot be compared"
            )
    first = versions[0]
    ours = VersionTags.of(first.tags)
    for other in versions[1:]:
        theirs = VersionTags.of(other.tags)
        if (theirs.dataset, theirs.test_digest) != (ours.dataset, ours.test_digest):
            raise ConfigError(
                f"cannot compare: version {first.version} was tested on "
                f"{ours.dataset} (test split {ours.test_digest}) and version "
                f"{other.version} on {theirs.dataset} (test split {theirs.test_digest})"
            )
    data = load_recorded(first.tags, data_dir)
    here = split_digest(data.test)
    if here != ours.test_digest:
        raise ConfigError(
            f"the {data.name} test split here (digest {here}) is not the one recorded with "
            f"version {first.version} ({ours.test_digest})"
        )
    return data


def score(model: ImageModel, data: ImageData) -> float:
    """Test accuracy by class name, so the data's class order need not be the model's."""
    names = [data.classes[i] for i in data.test.labels.tolist()]
    return model.accuracy_by_name(data.test.hwc(), names)


def _recorded_splits(
    versions: list[VersionInfo], gate_digest: str, data_dir: Path | None
) -> tuple[list[tuple[str, ImageData]], list[str]]:
    """Each version's own recorded test split that differs from the gate's."""
    seen, splits, notes = {gate_digest}, [], []
    for version in versions:
        recorded = VersionTags.of(version.tags)
        digest = recorded.test_digest
        if not digest or digest in seen or recorded.dataset is None:
            continue
        seen.add(digest)
        label = f"{recorded.dataset} (recorded with version {version.version})"
        try:
            splits.append((label, load_recorded(version.tags, data_dir)))
        except AutomlError as exc:
            notes.append(f"the test split of {label} could not be loaded: {exc}")
    return splits, notes


def promote(
    registry: Registry,
    name: str,
    *,
    version: int | None = None,
    from_alias: str = "candidate",
    alias: str = "champion",
    force: bool = False,
    data_dir: Path | None = None,
    dataset: str | None = None,
) -> Promotion:
    """Re-test candidate and champion, then move ``alias`` if the candidate is not worse.

    The gate is the test split both versions recorded (it must be the same), or the test
    split of ``dataset`` when named; then each version's own recorded split is scored too.
    Moves of the store's aliases take turns: the champion is read, scored against and
    replaced with no other move in between, so one asked twice at once is done once.
    """
    _candidate(registry, name, version, from_alias)  # refused before any lock is taken
    with registry.moving_aliases():
        return _promote(
            registry, name, version=version, from_alias=from_alias, alias=alias, force=force,
            data_dir=data_dir, dataset=dataset,
        )  # fmt: skip


def _candidate(registry: Registry, name: str, version: int | None, from_alias: str) -> VersionInfo:
    """The version to promote: the one named, or the one holding ``from_alias``."""
    if version is not None:
        return registry.version(name, version)
    found = registry.by_alias(name, from_alias)
    if found is None:
        raise ConfigError(f"model '{name}' has no version with the alias '{from_alias}'")
    return found


def _promote(
    registry: Registry,
    name: str,
    *,
    version: int | None,
    from_alias: str,
    alias: str,
    force: bool,
    data_dir: Path | None,
    dataset: str | None,
) -> Promotion:
    candidate = _candidate(registry, name, version, from_alias)
    champion = registry.by_alias(name, alias)
    if champion is not None and champion.version == candidate.version:  # asked twice: done
        held = VersionTags.of(champion.tags).test_acc or 0.0
        return Promotion(
            name, alias, candidate, champion, held, held, 0, promoted=False, forced=False,
            already=True,
        )  # fmt: skip
    versions = [candidate] + ([champion] if champion else [])
    models = [load_image_model(v.uri) for v in versions]
    extra: list[tuple[str, ImageData]] = []
    notes: list[str] = []
    if dataset is None:
        data = recorded_test_split(versions, data_dir)
    else:
        data = load_like(dataset, models[0].preprocess, data_dir)
        extra, notes = _recorded_splits(versions, split_digest(data.test), data_dir)
    candidate_acc = score(models[0], data)
    champion_acc = score(models[1], data) if champion else None
    evidence = tuple(
        Evidence(label, len(other.test), score(models[0], other),
                 score(models[1], other) if champion else None)
        for label, other in extra
    )  # fmt: skip
    accepted = champion_acc is None or candidate_acc >= champion_acc
    result = Promotion(
        name=name,
        alias=alias,
        candidate=candidate,
        champion=champion,
        candidate_acc=candidate_acc,
        champion_acc=champion_acc,
        test_images=len(data.test),
        promoted=accepted or force,
        forced=force and not accepted,
        split=data.spec or data.name,
        evidence=evidence,
        notes=tuple(notes),
    )
    if result.promoted:
        _move(registry, result)
    return result


def _move(registry: Registry, result: Promotion) -> None:
    name, alias, candidate, champion = result.name, result.alias, result.candidate, result.champion
    history = registry.alias_history(name, alias)
    if champion is not None and (not history or history[-1] != champion.version):
        history.append(champion.version)  # the alias was moved outside automl
    registry.set_alias(name, alias, candidate.version)
    registry.set_alias_history(name, alias, [*history, candidate.version])
    when = now()
    registry.tag_version(
        name,
        candidate.version,
        {
            f"promoted.{alias}.at": when,
            f"promoted.{alias}.from_version": str(champion.version) if champion else "none",
            f"promoted.{alias}.test_acc": figure(result.candidate_acc),
            f"promoted.{alias}.previous_test_acc": figure(result.champion_acc),
            f"promoted.{alias}.test_images": str(result.test_images),
            f"promoted.{alias}.test_split": result.split,
            f"promoted.{alias}.forced": str(result.forced).lower(),
        },
    )
    if champion is not None:
        registry.tag_version(
            name,
            champion.version,
            {f"demoted.{alias}.at": when, f"demoted.{alias}.replaced_by": str(candidate.version)},
        )


@dataclass(frozen=True)
class Rollback:
    name: str
    alias: str
    from_version: int
    to_version: int


def rollback(registry: Registry, name: str, alias: str = "champion") -> Rollback:
    """Give ``alias`` back to the version that held it before the current one, undoing
    the last move; rollbacks take turns with every move, so two at once undo two moves,
    never one move and then the undo."""
    if registry.by_alias(name, alias) is None:  # refused before any lock is taken
        raise ConfigError(f"no version of '{name}' holds the alias '{alias}'")
    with registry.moving_aliases():
        return _rollback(registry, name, alias)


def _rollback(registry: Registry, name: str, alias: str) -> Rollback:
    current = registry.by_alias(name, alias)
    if current is None:
        raise ConfigError(f"no version of '{name}' holds the alias '{alias}'")
    history = registry.alias_history(name, alias)
    if not history or history[-1] != current.version:
        history.append(current.version)
    if len(history) < 2:
        raise ConfigError(
            f"nothing to roll back to: version {current.version} is the first '{alias}' of '{name}'"
        )
    previous = history[-2]
    registry.set_alias(name, alias, previous)
    registry.set_alias_history(name, alias, history[:-1])
    when = now()
    registry.tag_version(
        name,
        current.version,
        {f"rolled_back.{alias}.at": when, f"rolled_back.{alias}.to": str(previous)},
    )
    registry.tag_version(name, previous, {f"restored.{alias}.at": when})
    return Rollback(name, alias, current.version, previous)
