"""A profile's data in one call: its catalog, cleaned, split by product group, with its noise floor.

The profile's `dataset` key chooses the catalog: `generated` for the sample catalog drawn by the
course (tiny), else the real price list's hub id or a local parquet file or folder in its schema
(full). Notebooks 03-05, the training command line and the benchmarks all read their splits here.
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phi3v_tutorial.data import cleaning, schema, sources

GENERATED = "generated"


@dataclass
class ProfileData:
    source: sources.CatalogSource
    report: cleaning.CleaningReport
    splits: dict[str, pd.DataFrame]  # train / validation / test, kept rows only

    def noise_floor_mape(self, split: str | None = None) -> float | None:
        """The best price error reachable on a split (the whole catalog by default); None for real data,
        whose pricing rule is unknown."""
        codes = None if split is None else self.splits[split]["product_code"]
        return self.source.noise_floor_mape(codes)


def load_catalog(dataset: str | Path, catalog_dir: str | Path, catalog_size: int, image_cache_dir: str | Path,
                 seed: int = 0, retry_failed_downloads: bool = False) -> sources.CatalogSource:
    """The raw catalog `dataset` names: generated into `catalog_dir` (`catalog_size` products drawn with
    `seed`), or the real price list with its pictures downloaded into `image_cache_dir` (pictures that
    failed in an earlier run are not asked again unless `retry_failed_downloads`)."""
    if str(dataset) == GENERATED:
        return sources.generated_catalog(catalog_dir, size=catalog_size, seed=seed)
    return sources.real_catalog(image_cache_dir, dataset=dataset, retry_failed=retry_failed_downloads)


def load_profile_data(dataset: str | Path = GENERATED, catalog_dir: str | Path = "data/catalog",
                      catalog_size: int = 3000, image_cache_dir: str | Path = "data/cache/burberry-images",
                      category_column: str = "category3_code", seed: int = 0) -> ProfileData:
    """`load_catalog`, then `cleaning.clean_catalog` and `cleaning.split_by_group` with the same seed."""
    schema.check_category_column(category_column)
    source = load_catalog(dataset, catalog_dir, catalog_size, image_cache_dir, seed)
    kept, report = cleaning.clean_catalog(source.table, source.image_dir, category_column=category_column,
                                          progress=False)
    return ProfileData(source, report, cleaning.split_by_group(kept, seed=seed))
