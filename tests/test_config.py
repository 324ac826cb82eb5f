import pytest

from vertex_imbalanced.config import (
    DEFAULT_IMBALANCE_MODE,
    DOWNSAMPLING_MODES,
    IMBALANCE_MODES,
    FeatureSpec,
    Hyperparameters,
    ImbalanceConfig,
)
from vertex_imbalanced.errors import PipelineInputError


def test_feature_spec_round_trips_and_orders_columns():
    spec = FeatureSpec(label="y", numeric="a, b", categorical=["c"], key="id", classes=[0, 1])
    assert spec.features == ("a", "b", "c")
    assert spec.read_columns == ("a", "b", "c", "y", "id")
    assert spec.classes == ("0", "1")
    assert FeatureSpec.from_json(spec.to_json()) == spec


def test_feature_spec_rejects_unknown_keys_and_overlaps():
    with pytest.raises(PipelineInputError, match="unknown feature config keys"):
        FeatureSpec.from_dict({"label": "y", "numerics": ["a"]})
    with pytest.raises(PipelineInputError, match="both numeric and categorical"):
        FeatureSpec(label="y", numeric=("a",), categorical=("a",))
    with pytest.raises(PipelineInputError, match="also listed as a feature"):
        FeatureSpec(label="y", numeric=("y",))
    with pytest.raises(PipelineInputError, match="invalid column name"):
        FeatureSpec(label="y; DROP TABLE t")


def test_imbalance_and_hyperparameter_validation():
    message = "unknown imbalance mode 'smote'; choose one of " + ", ".join(IMBALANCE_MODES)
    with pytest.raises(PipelineInputError, match=message):
        ImbalanceConfig(mode="smote")
    assert ImbalanceConfig().mode == DEFAULT_IMBALANCE_MODE
    for mode in IMBALANCE_MODES:
        assert ImbalanceConfig(mode=mode).mode == mode
    with pytest.raises(PipelineInputError, match="batch_size"):
        Hyperparameters(batch_size=0)
    with pytest.raises(PipelineInputError, match="unknown hyperparameters"):
        Hyperparameters.from_dict({"epoch": 3})
    assert Hyperparameters.from_dict({"hidden_units": [8]}).hidden_units == (8,)


def test_one_list_of_imbalance_modes():
    assert IMBALANCE_MODES == ("downsample_upweight", "class_weight", "none", "downsample_only")
    assert set(DOWNSAMPLING_MODES) < set(IMBALANCE_MODES)
    assert DEFAULT_IMBALANCE_MODE in DOWNSAMPLING_MODES
