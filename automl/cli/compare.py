"""``automl compare``: two registered versions side by side on the same test split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from automl.cli.common import DataDirOption, TrackingOption, console
from automl.errors import ConfigError
from automl.stores import DEFAULT_TRACKING

if TYPE_CHECKING:
    from automl.data import ImageData
    from automl.insight.compare import Comparison
    from automl.tracking import ImageModel, VersionInfo

VersionArgument = Annotated[
    str, typer.Argument(metavar="MODEL", help="models:/NAME@ALIAS, NAME@ALIAS or NAME/VERSION.")
]


def registered_uri(text: str) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/V`` for any of the forms people type."""
    from automl.tracking.common import REGISTERED
    from automl.tracking.models import SHORTHAND

    uri = text if text.startswith("models:/") else f"models:/{text}"
    if not (REGISTERED.fullmatch(uri) and (text == uri or SHORTHAND.fullmatch(text))):
        raise ConfigError(
            f"{text}: name a registered version: models:/NAME@ALIAS, NAME@ALIAS or NAME/VERSION"
        )
    return uri


def _test_data(
    versions: list[VersionInfo],
    models: list[ImageModel],
    dataset: str | None,
    data_dir: Path | None,
) -> ImageData:
    """The test split both versions recorded (it must be the same), or ``dataset``'s."""
    from automl.data.adapt import load_like
    from automl.release.promote import recorded_test_split  # promote's gate: the same check

    data = (
        recorded_test_split(versions, data_dir)
        if dataset is None
        else load_like(dataset, models[0].preprocess, data_dir)
    )
    for model in models:
        if model.classes != list(data.classes):
            raise ConfigError(
                f"{model.uri}: its classes ({', '.join(model.classes[:5])}...) are not the "
                f"test split's ({', '.join(data.classes[:5])}...)"
            )
    return data


def _table(comparison: Comparison, title: str) -> Table:
    first, second = comparison.first, comparison.second
    table = Table(title=title, title_justify="left")
    for column in ("class", "images", escape(first.name), escape(second.name)):
        table.add_column(column, justify="right")
    for name, images, a, b in comparison.per_class():
        table.add_row(escape(name), str(images), f"{a:.4f}", f"{b:.4f}")
    table.add_section()
    n = str(len(comparison.labels))
    table.add_row("accuracy", n, f"{first.report.accuracy:.4f}", f"{second.report.accuracy:.4f}")
    table.add_row("ECE", n, f"{first.report.ece:.4f}", f"{second.report.ece:.4f}")
    return table


def compare(
    first: VersionArgument,
    second: VersionArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="HTML page of the images one gets right and the other wrong."
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Compare on this data set's test split. [default: the recorded one]"),
    ] = None,
    data_dir: DataDirOption = None,
    tracking_uri: TrackingOption = DEFAULT_TRACKING,
) -> None:
    """Two versions on the same test split: per-class accuracy, calibration, the images one
    gets right and the other wrong, and McNemar's test on them."""
    from automl.insight.compare import compare_models, write_html
    from automl.tracking import Registry, load_image_model

    uris = [registered_uri(first), registered_uri(second)]
    registry = Registry(tracking_uri)
    versions = [registry.resolve(uri) for uri in uris]
    with console.status("loading both models and the test split…"):
        resolved = [v for v in versions if v is not None]
        models = [load_image_model(uri, tracking_uri) for uri in uris]
        data = _test_data(resolved, models, dataset, data_dir)
    names = tuple(
        f"{uri.removeprefix('models:/')} (v{v.version})" if v else uri
        for uri, v in zip(uris, versions, strict=True)
    )
    with console.status(f"scoring {len(data.test)} test images with both…"):
        comparison = compare_models(
            (models[0], models[1]), data.test.hwc(), data.test.labels.numpy(), (names[0], names[1])
        )
    split = data.spec or data.name
    console.print(_table(comparison, f"{split}: {len(data.test)} test images"))
    a, b = len(comparison.only_first), len(comparison.only_second)
    console.print(
        f"right in one and wrong in the other: {a + b} images ({a} only {escape(names[0])}, "
        f"{b} only {escape(names[1])})"
    )
    if output is not None:
        write_html(comparison, output)
        console.print(f"wrote {output}: the {a + b} images with both models' answers")
    console.print(escape(comparison.verdict()), soft_wrap=True)
