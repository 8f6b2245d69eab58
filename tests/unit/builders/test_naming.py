"""Names, labels and owner references: valid whatever the parent is called, distinct per parent."""

from __future__ import annotations

import random
import re
import string

import pytest

from ragops_operator.builders import child_name, common_labels, label_value, owner_reference, selector_labels

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
HASHED = re.compile(r"-[0-9a-f]{8}-")


def assert_valid_name(name: str, max_length: int = 63) -> None:
    assert len(name) <= max_length, name
    assert DNS_1123_LABEL.match(name), name
    # Service names are DNS-1035 labels: one name serves every kind of child.
    assert DNS_1035_LABEL.match(name), name


@pytest.mark.parametrize(
    ("parent", "suffix", "expected"),
    [
        ("docs", "runtime", "docs-runtime"),
        ("docs-v1", "build", "docs-v1-build"),
        ("a" * 57, "build", "a" * 57 + "-build"),  # exactly 63: still the plain form
    ],
)
def test_short_valid_names_keep_the_plain_form(parent: str, suffix: str, expected: str) -> None:
    assert child_name(parent, suffix) == expected


@pytest.mark.parametrize(
    ("parent", "why"),
    [
        ("a" * 58, "one character too long"),
        ("docs-" * 50 + "x", "a 251-character CR name"),
        ("docs.v1", "dots are valid in CR names, not in labels"),
        ("1docs", "a leading digit is not a DNS-1035 label"),
        ("-docs", "starts with a dash"),
        ("Docs", "upper case"),
    ],
)
def test_names_that_would_be_invalid_are_shortened_and_hashed(parent: str, why: str) -> None:
    name = child_name(parent, "runtime")
    assert_valid_name(name)
    assert HASHED.search(name), why
    assert name.endswith("-runtime"), "the suffix stays visible"


def test_max_length_is_respected() -> None:
    name = child_name("x" * 40, "build", max_length=30)
    assert_valid_name(name, max_length=30)
    assert child_name("docs", "build", max_length=30) == "docs-build"


def test_parents_equal_up_to_the_cut_get_distinct_names() -> None:
    prefix = "k" * 100
    names = {child_name(f"{prefix}{tail}", "build") for tail in ("a", "b", "-a", ".a", "aa")}
    assert len(names) == 5
    assert child_name("docs.v1", "build") != child_name("docs-v1", "build")


def test_names_are_deterministic() -> None:
    assert child_name("d" * 80, "eval") == child_name("d" * 80, "eval")


def test_every_generated_parent_gives_a_valid_distinct_name() -> None:
    # Parents drawn from the characters Kubernetes allows in custom resource names, at every
    # length around the cut-off: a table too large to write out, deterministic by its seed.
    rng = random.Random(20240611)
    alphabet = string.ascii_lowercase + string.digits + "-."
    parents = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 253))) for _ in range(2000)}
    names = {child_name(parent, "runtime") for parent in parents}
    for name in names:
        assert_valid_name(name)
    assert len(names) == len(parents)


@pytest.mark.parametrize("suffix", ["", "Build", "-build", "b" * 60])
def test_a_suffix_that_cannot_form_a_valid_name_is_refused(suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        child_name("docs", suffix)


@pytest.mark.parametrize(
    ("value", "kept"),
    [("docs", True), ("RagDeployment", True), ("a" * 63, True), ("a" * 64, False), ("x" * 253, False)],
)
def test_label_values_are_kept_when_valid_and_hashed_when_not(value: str, kept: bool) -> None:
    result = label_value(value)
    assert (result == value) is kept
    assert len(result) <= 63 and LABEL_VALUE.match(result)
    assert label_value("y" * 100) != label_value("y" * 101)


def test_common_labels_carry_the_recommended_labels_and_contain_the_selector() -> None:
    labels = common_labels("RagDeployment", "docs", "runtime")
    assert labels == {
        "app.kubernetes.io/name": "ragops",
        "app.kubernetes.io/instance": "docs",
        "app.kubernetes.io/component": "runtime",
        "app.kubernetes.io/managed-by": "ragops-operator",
        "app.kubernetes.io/part-of": "ragops",
        "ragops.dev/kind": "RagDeployment",
    }
    selector = selector_labels("docs", "runtime")
    assert selector.items() <= labels.items()
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}


def test_a_long_instance_name_still_makes_valid_labels() -> None:
    for value in common_labels("KnowledgeBaseVersion", "v" * 200, "build").values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)


def test_owner_reference_makes_the_resource_the_controller() -> None:
    assert owner_reference("ragops.dev/v1alpha1", "RagDeployment", "docs", "uid-1") == {
        "apiVersion": "ragops.dev/v1alpha1",
        "kind": "RagDeployment",
        "name": "docs",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
