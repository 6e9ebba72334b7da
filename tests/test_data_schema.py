"""The 17-column schema of the real price list, and that the generated catalog has exactly it."""

import datasets
import pyarrow.parquet as pq
import pytest

from phi3v_tutorial.data import schema
from phi3v_tutorial.data.catalog import generate_catalog

# Written out from the dataset card (docs/spec), independently of schema.COLUMNS.
REAL_COLUMNS = [
    ("website_name", "string"), ("competence_date", "string"), ("country_code", "string"),
    ("currency_code", "string"), ("brand", "string"), ("category1_code", "string"), ("category2_code", "string"),
    ("category3_code", "string"), ("product_code", "int64"), ("title", "string"), ("itemurl", "string"),
    ("imageurl", "string"), ("full_price", "float64"), ("price", "float64"), ("full_price_eur", "float64"),
    ("price_eur", "float64"), ("flg_discount", "int64"),
]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return generate_catalog(tmp_path_factory.mktemp("catalog"), size=40, seed=3, workers=1, progress=False)


def test_schema_lists_the_real_columns_in_order_with_their_dtypes():
    assert list(schema.COLUMNS.items()) == REAL_COLUMNS


def test_generated_parquet_has_exactly_the_real_arrow_schema(catalog):
    stored = pq.read_schema(catalog.directory / "catalog.parquet")
    assert [(field.name, str(field.type)) for field in stored] == [
        (name, {"string": "string", "int64": "int64", "float64": "double"}[dtype]) for name, dtype in REAL_COLUMNS
    ]


def test_generated_parquet_loads_with_the_real_dataset_features(catalog, tmp_path):
    loaded = datasets.load_dataset("parquet", data_files=str(catalog.directory / "catalog.parquet"), split="train",
                                   cache_dir=str(tmp_path))
    assert loaded.features == datasets.Features({name: datasets.Value(dtype) for name, dtype in REAL_COLUMNS})
    assert loaded.num_rows == 40


def test_check_features_names_a_missing_and_a_retyped_column():
    features = schema.features()
    del features["brand"]
    features["full_price"] = datasets.Value("string")
    with pytest.raises(ValueError, match=r"missing \['brand'\](?s:.*)full_price: dtype string, expected float64"):
        schema.check_features(features)


def test_check_features_accepts_large_strings_written_by_pandas():
    features = schema.features()
    features["title"] = datasets.Value("large_string")
    schema.check_features(features)
