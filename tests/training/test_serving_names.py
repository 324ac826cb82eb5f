"""Serving input names: stable, injective, valid signature arguments; a SavedModel served by them."""

import keyword

import keras
import numpy as np
import pytest
import tensorflow as tf

from vertex_imbalanced.config import FeatureSpec
from vertex_imbalanced.errors import PipelineInputError
from vertex_imbalanced.training.export import export_saved_model
from vertex_imbalanced.training.serving_names import is_signature_name, serving_name, serving_names

# Every kind of name BigQuery accepts that a signature argument cannot be, and near-collisions.
ADVERSARIAL = [
    "_score",
    "__score",
    "score",
    "from",
    "class",
    "lambda",
    "my feature",
    "my_feature",
    "my-feature",
    "my  feature",
    "größe",
    "grösse",
    "groe",
    "2nd_try",
    "日本語",
    "Ünïcödé ",
    "x" * 300,
    "a.b",
    "a_b",
    "#",
    "%",
    "Age",
]


def test_valid_names_are_kept_and_others_renamed_stably():
    assert serving_name("my_feature") == "my_feature"
    assert serving_name("Age") == "Age"  # case is kept: TF accepts it
    # fixed expectations: the rule must not change between releases (served names are an API)
    assert serving_name("my feature") == "my_feature_ea938146"
    assert serving_name("_score") == "score_bc8ebaa3"
    assert serving_name("from") == "from_75857a45"
    assert serving_name("größe") == "groe_d353a267"
    assert serving_name("2nd_try").startswith("c_2nd_try_")
    assert serving_name("日本語") == "c_77710aed"


def test_adversarial_names_map_injectively_to_valid_arguments():
    names = serving_names(ADVERSARIAL)
    assert list(names) == ADVERSARIAL
    served = list(names.values())
    assert len({s.lower() for s in served}) == len(served)  # distinct even ignoring case
    for original, name in names.items():
        assert is_signature_name(name) and name.isascii() and not keyword.iskeyword(name)
        assert name == serving_name(original)  # one column's name never depends on the others
    assert names["my feature"] != names["my_feature"] != names["my-feature"]


def test_names_equal_ignoring_case_are_refused_naming_both():
    with pytest.raises(PipelineInputError, match=r"'Score' and 'score' differ only in case"):
        serving_names(["Score", "score"])


def test_a_collision_of_served_names_is_refused_naming_both():
    clash = serving_name("my feature")  # a column literally named like another's served name
    with pytest.raises(PipelineInputError, match=r"'my feature' and 'my_feature_ea938146'"):
        serving_names(["my feature", clash])


def spec_of(numeric, categorical) -> FeatureSpec:
    """A spec with these feature names. FeatureSpec still refuses spaces and non-ASCII letters
    (warehouse.identifiers.validate_column, requested from its owner); the export only reads
    the feature names, so the spec is built without that check."""
    spec = object.__new__(FeatureSpec)
    for field, value in {"label": "label", "numeric": numeric, "categorical": categorical}.items():
        object.__setattr__(spec, field, value)
    return spec


def test_saved_model_is_served_by_the_mapped_names(tmp_path):
    """The signature takes the served names; each reaches its own column of the Keras model."""
    numeric = ("_score", "from", "my feature", "my_feature", "größe")
    categorical = ("class",)
    inputs = {n: keras.Input(shape=(), dtype="float32", name=n) for n in numeric}
    inputs["class"] = keras.Input(shape=(), dtype="string", name="class")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")
    stacked = keras.ops.stack([inputs[n] for n in numeric], axis=-1)
    x = keras.layers.Concatenate()([stacked, lookup(inputs["class"])])
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((len(numeric) + 3, 2), np.float32)
    kernel[: len(numeric), 1] = [1, 2, 4, 8, 16]  # each column moves class 1 by its own amount
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    export_saved_model(model, spec_of(numeric, categorical), str(tmp_path / "sm"), ["no", "yes"])
    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    names = serving_names([*numeric, *categorical])
    assert sorted(serve.structured_input_signature[1]) == sorted(names.values())
    rows = {n: np.eye(len(numeric), dtype=np.float32)[i] for i, n in enumerate(numeric)}
    features = {n: tf.constant(v) for n, v in rows.items()} | {"class": tf.constant(["a"] * 5)}
    out = serve(**{names[c]: v for c, v in features.items()})
    np.testing.assert_allclose(out["probabilities"].numpy(), model(features).numpy(), rtol=1e-6)
    logit = np.log(out["probabilities"].numpy()[:, 1] / out["probabilities"].numpy()[:, 0])
    np.testing.assert_allclose(logit, [1, 2, 4, 8, 16], rtol=1e-4)  # no two inputs swapped
    assert out["class_name"].numpy().tolist() == [b"yes"] * 5
