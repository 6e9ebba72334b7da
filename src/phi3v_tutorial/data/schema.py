"""The table schema of the real price list `DBQ/Burberry.Product.prices.United.States`.

Both data sources (the real dataset and the generated sample catalog) produce exactly these 17
columns, in this order and with these types, so every later step treats them the same.
"""

import datasets
import pandas as pd
import pyarrow as pa

BURBERRY_DATASET_ID = "DBQ/Burberry.Product.prices.United.States"

# column -> dtype, in the dataset's column order ("string", "int64" and "float64" are both
# datasets.Value dtypes and pyarrow type names).
COLUMNS: dict[str, str] = {
    "website_name": "string",
    "competence_date": "string",
    "country_code": "string",
    "currency_code": "string",
    "brand": "string",
    "category1_code": "string",
    "category2_code": "string",
    "category3_code": "string",
    "product_code": "int64",
    "title": "string",
    "itemurl": "string",
    "imageurl": "string",
    "full_price": "float64",
    "price": "float64",
    "full_price_eur": "float64",
    "price_eur": "float64",
    "flg_discount": "int64",
}

# The category levels an answer may name: category1_code (coarsest) to category3_code (finest).
CATEGORY_COLUMNS = ("category1_code", "category2_code", "category3_code")


def check_category_column(name: str) -> None:
    if name not in CATEGORY_COLUMNS:
        raise ValueError(f"category_column must be one of {CATEGORY_COLUMNS}, got {name!r}")


# The dataset's placeholder for a missing category or image URL.
NOT_AVAILABLE = "N.A."

def features() -> datasets.Features:
    return datasets.Features({name: datasets.Value(dtype) for name, dtype in COLUMNS.items()})


def arrow_schema() -> pa.Schema:
    return pa.schema([(name, pa.type_for_alias(dtype)) for name, dtype in COLUMNS.items()])


def _differences(actual: dict[str, str]) -> list[str]:
    """Human-readable differences between `actual` (column -> dtype) and the 17 columns."""
    problems = []
    if list(actual) != list(COLUMNS):
        missing = [name for name in COLUMNS if name not in actual]
        extra = [name for name in actual if name not in COLUMNS]
        problems.append(f"columns differ: missing {missing}, unexpected {extra}, order {list(actual)}")
    for name, dtype in COLUMNS.items():
        if name in actual and actual[name] != dtype:
            problems.append(f"{name}: dtype {actual[name]}, expected {dtype}")
    return problems


def check_features(found: datasets.Features) -> None:
    """Raise ValueError unless `found` has exactly the 17 columns and their dtypes."""
    actual = {name: getattr(feature, "dtype", type(feature).__name__) for name, feature in found.items()}
    # Parquet files written by pandas >= 3 store strings as large_string: the same values.
    actual = {name: "string" if dtype == "large_string" else dtype for name, dtype in actual.items()}
    problems = _differences(actual)
    if problems:
        raise ValueError("the table does not have the Burberry price-list schema:\n- " + "\n- ".join(problems))


def to_arrow(table: pd.DataFrame) -> pa.Table:
    """The 17 columns of `table` as an arrow table in the exact schema (raises if one is missing)."""
    return pa.Table.from_pandas(table[list(COLUMNS)], schema=arrow_schema(), preserve_index=False)


def check_table(table: pd.DataFrame) -> None:
    """Raise ValueError unless the DataFrame has exactly the 17 columns and their dtypes."""
    check_features(datasets.Features.from_arrow_schema(pa.Schema.from_pandas(table, preserve_index=False)))
