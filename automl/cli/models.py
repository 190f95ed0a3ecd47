"""Registry and deployment commands: models, promote, rollback, predict, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from automl.cli.common import DataDirOption, TrackingOption, console, errors, print_note
from automl.records import VersionTags
from automl.stores import DEFAULT_TRACKING

if TYPE_CHECKING:
    from automl.tracking import VersionInfo


def _row(version: VersionInfo) -> dict[str, Any]:
    """One version as ``automl models`` lists it (and prints it with ``--json``)."""
    tags = VersionTags.of(version.tags)
    return {
        "model": version.name,
        "version": version.version,
        "aliases": sorted(version.aliases),
        "val_acc": tags.val_acc,
        "test_acc": tags.test_acc,
        "dataset": tags.dataset,
        "study": tags.study,
        "trial": tags.trial_number,
        "ensemble": list(tags.members),  # the trials it averages, best first ([]: one trial)
        "test_acc_best_member": tags.test_acc_single,
        "created": version.created.isoformat(timespec="seconds") if version.created else None,
        "uri": version.uri,
    }


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _what(row: dict[str, Any]) -> str:
    """``trial 28``, or ``ensemble 28,9,10 (28 alone: test_acc 0.9851)``: the figures
    beside it are the ensemble's, never its best member's."""
    if not row["ensemble"]:
        return f"trial {row['trial']}" if row["trial"] else "-"
    members, alone = row["ensemble"], row["test_acc_best_member"]
    single = f" ({members[0]} alone: test_acc {alone:.4f})" if alone is not None else ""
    return f"ensemble {','.join(map(str, members))}{single}"


def models(
    name: Annotated[
        str | None, typer.Argument(help="A registered model; all when omitted.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """List registered models and their versions, aliases and figures."""
    from automl.tracking.listing import list_versions

    found = list_versions(tracking_uri, name)
    if found is None:  # a store only MLflow's client can read
        from automl.tracking import Registry

        registry = Registry(tracking_uri)
        names = [name] if name else registry.model_names()
        found = [v for model_name in names for v in registry.versions(model_name)]
    rows = [_row(v) for v in found]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no registered models yet: run [bold]automl search[/] first")
        return
    from rich.text import Text

    from automl.stores import mask_url

    title = Text(f"Registered models in {mask_url(tracking_uri)}")  # never markup
    table = Table(title=title, title_justify="left")
    for column in ("model", "version", "aliases", "val_acc", "test_acc", "made of", "dataset",
                   "study", "created"):  # fmt: skip
        table.add_column(column, justify="right" if column == "version" else "left")
    for row in rows:
        created = (row["created"] or "-")[:16].replace("T", " ")
        cells = (
            row["model"], str(row["version"]), ", ".join(row["aliases"]) or "-",
            _fmt(row["val_acc"]), _fmt(row["test_acc"]), _what(row), row["dataset"] or "-",
            row["study"] or "-", created,
        )  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))  # names and paths are not markup
    console.print(table)


def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int | None, typer.Option(help="The version to promote.")] = None,
    from_alias: Annotated[
        str, typer.Option(help="Promote the version holding this alias.")
    ] = "candidate",
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    force: Annotated[
        bool, typer.Option(help="Promote even when less accurate (recorded as forced).")
    ] = False,
    dataset: Annotated[
        str | None,
        typer.Option(help="Gate on this data set's test split (e.g. new data after a retrain)."),
    ] = None,
    data_dir: DataDirOption = None,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Move ALIAS to a version only if it is at least as accurate on the same test split."""
    from automl.release.promote import PromotionRefused
    from automl.release.promote import promote as run_promote
    from automl.tracking import Registry

    where = f"the {dataset} test split" if dataset else "the recorded test split"
    with console.status(f"re-evaluating on {where}…"):
        result = run_promote(
            Registry(tracking_uri), name, version=version, from_alias=from_alias,
            alias=alias, force=force, data_dir=data_dir, dataset=dataset,
        )  # fmt: skip
    for note in result.notes:
        print_note(note)
    candidate = result.candidate.version
    if result.already:
        console.print(f"version {candidate} of '{name}' already holds '{alias}'; nothing to do")
        return
    if result.first:
        console.print(
            f"no '{alias}' yet: version {candidate} of '{name}' becomes '{alias}' "
            f"(test_acc {result.candidate_acc:.4f} on {result.test_images} test images)"
        )
        return
    assert result.champion is not None and result.champion_acc is not None
    table = Table(
        title=f"{name}: gate on {result.split} ({result.test_images} test images)",
        title_justify="left",
    )
    table.add_column("")
    table.add_column(f"candidate (version {candidate})", justify="right")
    table.add_column(f"{alias} (version {result.champion.version})", justify="right")
    table.add_row("test_acc now (gate)", _fmt(result.candidate_acc), _fmt(result.champion_acc))
    for row in result.evidence:
        table.add_row(
            f"test_acc on {row.split}, {row.images} images",
            _fmt(row.candidate_acc),
            _fmt(row.champion_acc),
        )
    table.add_row(
        "test_acc recorded",
        _fmt(VersionTags.of(result.candidate.tags).test_acc),
        _fmt(VersionTags.of(result.champion.tags).test_acc),
    )
    console.print(table)
    if not result.promoted:
        raise PromotionRefused(
            f"version {candidate} is less accurate than '{alias}' (version "
            f"{result.champion.version}): {result.candidate_acc:.4f} < {result.champion_acc:.4f}; "
            "nothing changed (use --force to promote anyway)"
        )
    how = "[yellow]forced[/]: " if result.forced else ""
    console.print(
        f"{how}'{alias}' moved from version {result.champion.version} to version {candidate}"
    )


def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "champion",
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Give ALIAS back to the version that held it before."""
    from automl.release.promote import rollback as run_rollback
    from automl.tracking import Registry

    result = run_rollback(Registry(tracking_uri), name, alias)
    console.print(
        f"'{alias}' of '{name}' moved back from version {result.from_version} "
        f"to version {result.to_version}"
    )


def predict(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/V or a folder.")
    ],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    top_k: Annotated[int, typer.Option(help="Classes to show per image.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one per image.")] = False,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Predict the classes of images with a registered model."""
    from rich.markup import escape
    from rich.text import Text

    from automl.errors import ConfigError
    from automl.release.predict import collect_files, predict_files, shown
    from automl.tracking import load_image_model

    if top_k < 1:
        raise ConfigError(f"--top-k: must be at least 1, got {top_k}")
    files, missing = collect_files(paths)
    model = load_image_model(model_uri, tracking_uri)
    with console.status(f"predicting {len(files)} images…"):
        predictions, skipped = predict_files(model, files, top_k)
    for path, reason in [*missing, *skipped]:
        errors.print(
            f"[yellow]skipped[/] {escape(shown(path))}: {escape(reason)}",
            highlight=False,
            soft_wrap=True,
        )
    if not predictions:
        raise ConfigError(f"no readable image among {len(files) + len(missing)} paths")
    if as_json:
        for p in predictions:
            top = [{"label": label, "probability": prob} for label, prob in p.top]
            print(json.dumps({"path": shown(p.path), "predictions": top}))
        return
    table = Table(title=f"{model_uri}: {len(predictions)} images", title_justify="left")
    table.add_column("file")
    for rank in range(1, len(predictions[0].top) + 1):
        table.add_column(f"#{rank}" if len(predictions[0].top) > 1 else "class")
        table.add_column("p", justify="right")
    for p in predictions:
        cells = [item for label, prob in p.top for item in (label, f"{prob:.3f}")]
        table.add_row(Text(shown(p.path)), *cells)
    console.print(table)


def export(
    model_uri: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/V or a folder.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="onnx|torchscript|pt2")] = "onnx",
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")] = Path(
        "model.onnx"
    ),
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Export a model's network, checked against the registered one on sample inputs."""
    from automl.release.export import check_export, export_model
    from automl.tracking import load_image_model

    check_export(fmt, output)
    model = load_image_model(model_uri, tracking_uri)
    with console.status(f"exporting to {fmt} and checking it…"):
        result = export_model(model, fmt, output)
    console.print(
        f"wrote {result.path} ({fmt}) and {result.preprocess_path} (preprocessing); "
        f"max abs difference from the registered network: {result.max_abs_diff:.2e} "
        f"over {result.checked_inputs} sample batches"
    )


def serve(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@ALIAS or models:/NAME/V.")],
    host: Annotated[
        str, typer.Option("--host", "-h", help="Address to listen on; 0.0.0.0 exposes it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 5001,
    max_body_mib: Annotated[
        int, typer.Option(help="Largest request body accepted, in MiB; larger ones get 413.")
    ] = 64,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Serve a registered model over HTTP (MLflow's scoring app, /invocations), after
    checking its files against the SHA-256 recorded when it was registered."""
    from automl.errors import ConfigError
    from automl.serving.server import MIB, listen, serve_folder
    from automl.tracking import checked_model_folder

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: must be 1..65535, got {port}")
    if max_body_mib < 1:
        raise ConfigError(f"--max-body-mib: must be at least 1, got {max_body_mib}")
    try:
        sock = listen(host, port)  # at once: a port in use is said before the model is fetched
    except OSError as exc:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there: {exc.strerror or exc}"
        ) from None
    with sock:
        folder = checked_model_folder(model_uri, tracking_uri)
        console.print(
            f"serving {model_uri} (files checked, copy in {folder}) on http://{host}:{port}"
            " — /ping, /invocations; Ctrl-C stops",
            markup=False,
        )
        try:
            serve_folder(folder, sock, max_body_mib * MIB)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (docker stop): the normal way to stop
            console.print("server stopped")
        finally:
            _remove_copy(folder)


def _remove_copy(folder: Path) -> None:
    """The checked copy the server read, in its own folder under the temporary folder."""
    import shutil
    import tempfile

    tmp = Path(tempfile.gettempdir())
    if folder.is_relative_to(tmp) and folder != tmp:
        shutil.rmtree(tmp / folder.relative_to(tmp).parts[0], ignore_errors=True)
