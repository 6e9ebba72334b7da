"""The catalog a profile works on, behind one interface: generated (tiny) or the real price list (full).

Both give a table in the 17 columns and a folder of pictures named `<product_code>.<ext>`, which is
all that cleaning, splitting and training need.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phi3v_tutorial.data import catalog, schema
from phi3v_tutorial.data.burberry import download_images, load_burberry_table


@dataclass
class CatalogSource:
    name: str
    table: pd.DataFrame  # the 17 columns
    image_dir: Path  # <product_code>.<ext>
    summary: str  # what loading did, for a reader
    metrics: dict  # the same in numbers, for record_metrics
    list_prices: pd.Series | None = None  # product_code -> list price; known for generated data only

    def noise_floor_mape(self, product_codes: Iterable[int] | None = None) -> float | None:
        """The noise floor of these products (all by default); None when the pricing rule is unknown."""
        if self.list_prices is None:
            return None
        prices = self.list_prices if product_codes is None else self.list_prices.loc[list(product_codes)]
        return catalog.noise_floor_mape(prices.tolist())


def generated_catalog(directory: str | Path, size: int = 3000, seed: int = 0, workers: int = 2) -> CatalogSource:
    """The sample catalog in `directory`, generated unless an identical one is there already."""
    generated = catalog.generate_catalog(directory, size=size, seed=seed, workers=workers)
    manifest = generated.manifest
    summary = (f"{size} generated products, {manifest['pictures']} pictures in {generated.image_dir} "
               f"(generation took {manifest['generation_seconds']} s: {manifest['pictures_per_second']} pictures/s)")
    return CatalogSource(
        name="generated sample catalog",
        table=generated.table,
        image_dir=generated.image_dir,
        summary=summary,
        metrics={key: manifest[key] for key in ("generation_seconds", "pictures_per_second", "traps")},
        list_prices=generated.products.set_index("product_code")["list_price"],
    )


def real_catalog(image_cache_dir: str | Path, dataset: str | Path = schema.BURBERRY_DATASET_ID,
                 workers: int = 16, retry_failed: bool = False) -> CatalogSource:
    """The real price list (`load_burberry_table`) with its pictures downloaded into `image_cache_dir`.

    A URL that failed in an earlier call is not asked again unless `retry_failed` (see `download_images`).
    """
    table = load_burberry_table(dataset)
    report = download_images(table, image_cache_dir, workers=workers, retry_failed=retry_failed)
    return CatalogSource(
        name=str(dataset),
        table=table,
        image_dir=Path(image_cache_dir),
        summary=f"{len(table)} products from {dataset}; pictures: {report}",
        metrics={"download_seconds": round(report.seconds, 1), "downloads": report.counts()},
    )
