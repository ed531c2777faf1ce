"""The data generator's sizing and SQL are pure functions of the scale."""

import pytest

import generate_data


def test_default_scale_matches_the_reference_sizes():
    sizes = generate_data.Sizes.at(1.0)
    assert (sizes.jobs, sizes.candidates, sizes.applications) == (100_000, 50_000, 1_000_000)
    assert sizes.users == sizes.candidates + sizes.employers


@pytest.mark.parametrize("scale", [0.01, 0.5, 10])
def test_sizes_scale_in_proportion(scale):
    sizes = generate_data.Sizes.at(scale)
    assert sizes.applications == int(1_000_000 * scale)
    assert sizes.jobs == int(100_000 * scale)


def test_statements_are_deterministic_and_cover_every_table():
    first = generate_data.statements(generate_data.Sizes.at(0.1))
    second = generate_data.statements(generate_data.Sizes.at(0.1))
    assert first == second
    assert list(first) == generate_data.TABLES


def test_bad_scale_is_refused(capsys):
    with pytest.raises(SystemExit):
        generate_data.main(["--scale", "0"])
    assert "--scale 0.0" in capsys.readouterr().err
