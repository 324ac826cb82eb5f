import pytest

from vertex_imbalanced.errors import PipelineInputError, SchemaError
from vertex_imbalanced.warehouse.identifiers import TableRef, require_columns, validate_column


@pytest.mark.parametrize(
    "bad", ["x; DROP TABLE y", "a`b", 'a"b', "a\\b", "", "a.b", "x) OR (1=1", "_TABLE_x"]
)
def test_bad_column_names_are_rejected(bad):
    with pytest.raises(PipelineInputError, match="invalid column name"):
        validate_column(bad)


@pytest.mark.parametrize("bad", ["p.d.t; DROP TABLE y", "p.d.`t`", "p.d.t'", "a.b.c.d", 'p.d."t"'])
def test_bad_table_refs_are_rejected(bad):
    with pytest.raises(PipelineInputError):
        TableRef.parse(bad)


def test_table_ref_forms():
    ref = TableRef.parse("bq://my-project.sales.orders_2024")
    assert (ref.project, ref.dataset, ref.table) == ("my-project", "sales", "orders_2024")
    assert ref.bigquery == "`my-project.sales.orders_2024`"
    assert ref.duckdb == '"sales"."orders_2024"'
    assert TableRef.parse("demo").duckdb == '"demo"'
    assert str(ref.with_table("x")) == "my-project.sales.x"


def test_require_columns_suggests():
    with pytest.raises(SchemaError, match=r"no column 'labl'; did you mean 'label'"):
        require_columns("t", ["labl"], ["label", "x"])
